"""probes.py: pooling over real tokens, logistic-regression training, save/load, bad probes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import optimize

from mechtests.data import TextSet
from mechtests.errors import DataError, NumericalError, UsageError
from mechtests.models import ModelPair
from mechtests.probes import Probe, _fit_logistic, load_probe, pooled_residual, probe_correct, save_probe, train_probe


def _labelled(n: int = 40) -> TextSet:
    # Two byte-disjoint "vocabularies": a random model separates them linearly.
    rng = np.random.default_rng(0)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        alphabet = "xyzqwk" if label else "aeioum"
        texts.append("".join(rng.choice(list(alphabet), size=int(rng.integers(3, 12)))))
        labels.append(label)
    return TextSet("synthetic", tuple(texts), tuple(labels))


def test_pooling_ignores_padding(tiny_pair: ModelPair) -> None:
    """A text's pooled vector is the same alone and next to a much longer text (more padding)."""
    model = tiny_pair.base
    short = "hi you"
    alone = pooled_residual(model, [short])
    padded = pooled_residual(model, [short, "a much longer text that forces lots of left padding"])
    torch.testing.assert_close(padded[0], alone[0], rtol=1e-5, atol=1e-5)


def test_pooling_known_answer(tiny_pair: ModelPair) -> None:
    """Pooled = plain mean over the final residual of the unpadded text."""
    model = tiny_pair.base
    ids = torch.tensor([model.tokenizer("some words").input_ids])
    got: dict[str, torch.Tensor] = {}
    with torch.inference_mode(), model.hooks([(model.final_resid_hook, lambda r: got.__setitem__("r", r.clone()))]):
        model.forward(ids)
    torch.testing.assert_close(pooled_residual(model, ["some words"])[0], got["r"][0].mean(0), rtol=1e-5, atol=1e-6)


def test_pooling_bad_inputs(tiny_pair: ModelPair) -> None:
    with pytest.raises(UsageError, match="no texts"):
        pooled_residual(tiny_pair.base, [])
    with pytest.raises(UsageError, match="exceeds the context length"):
        pooled_residual(tiny_pair.base, ["a"], max_tokens=65)


def test_fit_logistic_matches_scipy() -> None:
    """Known answer: the same L2-regularised objective minimised by scipy."""
    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0], dtype=torch.float64)
    x = torch.randn(200, 5, generator=gen, dtype=torch.float64) * scale + 0.3
    true_w = torch.tensor([1.0, -0.5, 2.0, 0.0, 0.7], dtype=torch.float64)
    y = (torch.rand(200, generator=gen, dtype=torch.float64) < torch.sigmoid(x @ true_w - 0.2)).double()
    l2 = 1e-2
    w, b = _fit_logistic(x, y, l2, max_iter=500)
    mean, std = x.mean(0).numpy(), x.std(0).numpy()
    z = (x.numpy() - mean) / std

    def loss(theta: np.ndarray) -> float:
        logits = z @ theta[:-1] + theta[-1]
        return float(np.mean(np.logaddexp(0, logits) - y.numpy() * logits) + l2 * theta[:-1] @ theta[:-1])

    theta = optimize.minimize(loss, np.zeros(6), method="BFGS", options={"gtol": 1e-10}).x
    expected_w = theta[:-1] / std
    expected_b = theta[-1] - float((expected_w * mean).sum())
    np.testing.assert_allclose(w.numpy(), expected_w, rtol=1e-3, atol=1e-4)
    assert b == pytest.approx(expected_b, rel=1e-3, abs=1e-4)


def test_train_probe_separates_and_is_deterministic(tiny_pair: ModelPair) -> None:
    data = _labelled()
    fit = train_probe(tiny_pair.base, data, seed=0, test_fraction=0.25)
    assert (fit.n_train, fit.n_test) == (30, 10)
    assert fit.train_accuracy == pytest.approx(1.0) and fit.test_accuracy >= 0.8
    assert fit.test_correct.dtype == np.bool_ and fit.test_correct.mean() == pytest.approx(fit.test_accuracy)
    again = train_probe(tiny_pair.base, data, seed=0, test_fraction=0.25)
    assert torch.equal(fit.probe.weight, again.probe.weight) and fit.probe.bias == again.probe.bias
    other_split = train_probe(tiny_pair.base, data, seed=1, test_fraction=0.25)
    assert not torch.equal(fit.probe.weight, other_split.probe.weight)
    correct = probe_correct(tiny_pair.base, fit.probe, data)
    assert correct.shape == (40,) and correct.mean() >= 0.9
    torch.testing.assert_close(fit.probe.direction.norm(), torch.tensor(1.0))


def test_train_probe_bad_data(tiny_pair: ModelPair) -> None:
    with pytest.raises(DataError, match="no labels"):
        train_probe(tiny_pair.base, TextSet("u", ("a", "b")))
    with pytest.raises(DataError, match="both labels"):
        train_probe(tiny_pair.base, TextSet("one", ("a", "b", "c"), (1, 1, 1)))
    with pytest.raises(DataError, match="too few"):
        train_probe(tiny_pair.base, TextSet("two", ("a", "b"), (0, 1)))
    with pytest.raises(UsageError, match="test_fraction"):
        train_probe(tiny_pair.base, _labelled(), test_fraction=1.0)


def test_save_load_roundtrip(tmp_path: Path) -> None:
    probe = Probe(torch.tensor([1.0, -2.0, 0.5]), 0.25, None, {"seed": 3, "note": "x"})
    path = save_probe(probe, tmp_path / "sub" / "probe.pt")
    loaded = load_probe(path, d_model=3)
    assert torch.equal(loaded.weight, probe.weight) and loaded.bias == 0.25 and loaded.pooling == "mean"
    # Own format without a hook name means the final residual, stated by the file.
    assert loaded.hook_name == "resid_final" and loaded.metadata["hook_source"] == "file"
    assert {k: loaded.metadata[k] for k in ("seed", "note")} == {"seed": 3, "note": "x"}
    assert loaded.metadata["bias_source"] == "file" and loaded.metadata["format"] == "mechtests-probe/1"


@pytest.mark.parametrize("shape", [(4,), (4, 1), (1, 4)])
def test_load_raw_tensor_probe(tmp_path: Path, shape: tuple[int, ...]) -> None:
    weight = torch.arange(1.0, 5.0).reshape(shape)
    torch.save(weight, tmp_path / "probe.pt")
    probe = load_probe(tmp_path / "probe.pt", d_model=4)
    assert torch.equal(probe.weight, torch.arange(1.0, 5.0))
    torch.testing.assert_close(probe.direction, torch.arange(1.0, 5.0) / torch.arange(1.0, 5.0).norm())
    # A raw tensor says nothing about its bias or hook: recorded, never silently 0 / a guess.
    assert probe.metadata["bias_source"] == "missing" and probe.metadata["hook_source"] == "default"
    assert probe.hook_name == "resid_final" and probe.metadata["format"] == f"raw tensor {shape}"
    given = load_probe(tmp_path / "probe.pt", hook_name="ln_final", bias=-0.5)
    assert (given.hook_name, given.bias, given.metadata["bias_source"], given.metadata["hook_source"]) == (
        "ln_final", -0.5, "option", "option")


def test_probe_of_wrong_width(tmp_path: Path, tiny_pair: ModelPair) -> None:
    torch.save(torch.ones(16), tmp_path / "probe.pt")
    with pytest.raises(UsageError, match="width 16.*d_model=32"):
        load_probe(tmp_path / "probe.pt", d_model=32)
    probe = load_probe(tmp_path / "probe.pt")
    with pytest.raises(UsageError, match="width 16 does not fit"):
        probe.check_width(tiny_pair.base)
    with pytest.raises(UsageError, match="width 16"):
        probe.predict_logits(torch.ones(2, 32))


def test_bad_probe_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such probe file"):
        load_probe(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="junk.pt: not a readable torch file"):
        load_probe(tmp_path / "junk.pt")
    torch.save(torch.ones(3, 3), tmp_path / "matrix.pt")
    with pytest.raises(DataError, match=r"shape \(3, 3\)"):
        load_probe(tmp_path / "matrix.pt")
    torch.save({"something": 1}, tmp_path / "dict.pt")
    with pytest.raises(DataError, match=r"dict.pt: probe dict has unknown key\(s\) \['something'\]"):
        load_probe(tmp_path / "dict.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(DataError, match="not a mechtests probe, a probe tensor or a probe dict"):
        load_probe(tmp_path / "list.pt")
    torch.save(torch.zeros(4), tmp_path / "zero.pt")
    with pytest.raises(UsageError, match="zero.pt: probe weight is all zeros"):
        load_probe(tmp_path / "zero.pt")
    torch.save(torch.tensor([1.0, float("nan")]), tmp_path / "nan.pt")
    with pytest.raises(DataError, match="nan.pt: probe weight or bias contains NaN"):
        load_probe(tmp_path / "nan.pt")
    torch.save(torch.ones(4, dtype=torch.long), tmp_path / "int.pt")
    with pytest.raises(DataError, match="dtype torch.int64"):
        load_probe(tmp_path / "int.pt")


def test_probe_dict_format(tmp_path: Path) -> None:
    torch.save({"coef": torch.ones(1, 4), "intercept": torch.tensor([0.5]), "hook": "ln_final", "pooling": "last"},
               tmp_path / "sk.pt")
    probe = load_probe(tmp_path / "sk.pt", d_model=4)
    assert (probe.bias, probe.hook_name, probe.pooling, probe.metadata["bias_source"]) == (0.5, "ln_final", "last", "file")
    torch.save({"weight": torch.ones(4), "direction": torch.ones(4)}, tmp_path / "twice.pt")
    with pytest.raises(DataError, match="gives weight twice"):
        load_probe(tmp_path / "twice.pt")


def test_fit_intercept_known_answers() -> None:
    from mechtests.probes import fit_intercept

    # Scores all zero: the intercept is the log-odds of the labels.
    assert fit_intercept(np.zeros(5), np.array([1, 1, 1, 1, 0])) == pytest.approx(np.log(4), abs=1e-9)
    # Against scipy's 1-D minimiser of the same loss.
    rng = np.random.default_rng(1)
    s, y = rng.normal(size=200), (rng.random(200) < 0.3).astype(float)

    def loss(b: float) -> float:
        z = s + b
        return float(np.sum(np.logaddexp(0, z) - y * z))

    expected = optimize.minimize_scalar(loss, bounds=(-20, 20), method="bounded", options={"xatol": 1e-10}).x
    assert fit_intercept(s, y) == pytest.approx(expected, abs=1e-6)


def test_sign_check_refuses_a_reversed_probe_and_passes_the_right_one() -> None:
    from mechtests.probes import check_probe_sign

    rng = np.random.default_rng(0)
    y = np.arange(200) % 2
    s = y * 2.0 - 1.0 + rng.normal(scale=0.5, size=200)
    good = check_probe_sign(s, y, bias=0.0, where="p.pt")
    assert good.auc > 0.95 and good.accuracy > 0.9
    with pytest.raises(UsageError, match=r"p.pt: .*AUC 0\.0.*accuracy 0\.0.*sign is reversed.*Fix: negate"):
        check_probe_sign(-s, y, bias=0.0, where="p.pt")
    # An uninformative probe is not called reversed (that is for claim 2 to judge).
    assert check_probe_sign(rng.normal(size=200), y, bias=0.0, where="p").auc == pytest.approx(0.5, abs=0.1)


def test_prepare_probe_fits_the_missing_bias_on_a_held_out_split(tiny_pair: ModelPair) -> None:
    from mechtests.probes import prepare_probe, probe_scores

    data = _labelled(60)
    fit = train_probe(tiny_pair.base, data, seed=0)
    raw = Probe(fit.probe.weight, 0.0, "resid_final", {"bias_source": "missing"})
    ready, record = prepare_probe(tiny_pair.base, raw, data, seed=0)
    assert record["bias_source"] == "fitted" and record["bias_fitted_on"]["n"] == 54  # 90% of 60
    assert ready.metadata["trained_on"] == data.sha256 and ready.metadata["test_fraction"] == 0.1
    assert record["sign_check"]["auc"] > 0.9
    # Refitting the bias of the trained probe with its direction fixed lands near its own bias.
    scores = probe_scores(tiny_pair.base, raw, data)
    assert np.mean((scores + ready.bias > 0) == np.asarray(data.labels).astype(bool)) > 0.9
    reversed_probe = Probe(-fit.probe.weight, 0.0, "resid_final", {"bias_source": "missing"})
    with pytest.raises(UsageError, match="sign is reversed"):
        prepare_probe(tiny_pair.base, reversed_probe, data, seed=0)
    with pytest.raises(UsageError, match="no bias, and there is no labelled probe data"):
        prepare_probe(tiny_pair.base, raw, None)


def test_ln_final_hook_reads_after_the_final_norm(tiny_pair: ModelPair) -> None:
    """``ln_final`` is what Hugging Face returns as hidden_states[-1] (the reference paper's probe)."""
    model = tiny_pair.base
    ids, mask = torch.tensor([[104, 105, 33]]), torch.ones(1, 3, dtype=torch.long)
    pooled = pooled_residual(model, ["hi!"], hook_name="ln_final")
    with torch.inference_mode():
        hidden = model.bridge.original_model(ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(pooled, hidden.mean(dim=1), rtol=1e-5, atol=1e-5)
    last = pooled_residual(model, ["hi!"], hook_name="ln_final", pooling="last")
    torch.testing.assert_close(last, hidden[:, -1], rtol=1e-5, atol=1e-5)


def test_probe_validation() -> None:
    with pytest.raises(NumericalError):
        Probe(torch.tensor([1.0, float("nan")]))
    with pytest.raises(UsageError, match="all zeros"):
        Probe(torch.zeros(3))
    with pytest.raises(UsageError, match="empty"):
        Probe(torch.zeros(0))
    probe = Probe(torch.tensor([[2.0], [0.0]]), 1.0)
    assert probe.weight.shape == (2,)
    torch.testing.assert_close(probe.predict_logits(torch.tensor([[1.0, 5.0]])), torch.tensor([3.0]))
