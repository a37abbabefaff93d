"""hook_routes.py and LoadedModel's two backends: the plain Hugging Face twin and the bridge.

The twin is only a speed-up, so everything here checks that it is invisible: every routed hook
sees the bridge's tensor, interventions and statistics give the bridge's tokens and numbers, a hook
without a route moves every active hook to the bridge (and back), and no hook is ever left behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mechtests import hook_routes
from mechtests.data import left_padded_batch
from mechtests.errors import UsageError
from mechtests.generation import GenerationConfig, generate
from mechtests.interventions import Compose, PatchFromModel, ScaleKeys, SubtractDirection, ZeroAblation
from mechtests.models import LoadedModel, load_model
from mechtests.neurons import NeuronSet

ARCHS = ("gpt2", "llama", "mistral", "qwen2")
LAYER_POINTS = ("mlp.hook_post", "mlp.hook_pre", "mlp.hook_pre_linear", "hook_mlp_out", "hook_attn_out",
                "hook_resid_post")
UNROUTED = "blocks.0.hook_resid_mid"  # a real bridge hook point the twin has no route for
PROMPTS = ["hello there my friend", "abc", "zz top", "a longer prompt than the others, by far"]
NEURONS = NeuronSet.from_pairs([(0, 1), (0, 40), (1, 5), (1, 63)], n_layers=2, d_mlp=64)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """``{arch: (base, tuned)}`` tiny checkpoints; tuned is a perturbed copy (a patch source)."""
    from mechtests.testing import make_tiny_checkpoint, perturbed_copy

    root = tmp_path_factory.mktemp("routes")
    out = {}
    for arch in ARCHS:
        base = make_tiny_checkpoint(root / arch, arch=arch, seed=3)
        out[arch] = (base, perturbed_copy(base, root / f"{arch}-tuned", scale=0.2, seed=4))
    return out


@pytest.fixture(scope="module")
def both(checkpoints: dict[str, tuple[Path, Path]]) -> dict[str, tuple[LoadedModel, LoadedModel]]:
    """``{arch: (auto, bridge)}``: the same base checkpoint loaded with each backend."""
    return {arch: (load_model(base), load_model(base, backend="bridge")) for arch, (base, _) in checkpoints.items()}


@pytest.fixture(scope="module")
def sources(checkpoints: dict[str, tuple[Path, Path]]) -> dict[str, tuple[LoadedModel, LoadedModel]]:
    """``{arch: (auto, bridge)}`` of the tuned checkpoints, to patch activations from."""
    return {arch: (load_model(tuned), load_model(tuned, backend="bridge")) for arch, (_, tuned) in checkpoints.items()}


@pytest.fixture(scope="module")
def baseline_hooks(both: dict[str, tuple[LoadedModel, LoadedModel]]) -> dict[int, int]:
    """Torch hooks each model has before any test.

    The bridge keeps permanent hooks of its own, some added on its first forward call (on its
    LayerNorms), so each model first runs once through the bridge.
    """
    for pair in both.values():
        for model in pair:
            ids, mask = _inputs(model)
            with torch.inference_mode(), model.hooks([(UNROUTED, lambda t: None)]):
                model.forward(ids, mask)
    return {id(model): _hooks_on(model) for pair in both.values() for model in pair}


@pytest.fixture(params=ARCHS)
def arch(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _inputs(model: LoadedModel) -> tuple[torch.Tensor, torch.Tensor]:
    return left_padded_batch(model.tokenizer, PROMPTS, max_tokens=32)


def _capture(model: LoadedModel, name: str) -> torch.Tensor:
    ids, mask = _inputs(model)
    seen: list[torch.Tensor] = []
    with torch.inference_mode(), model.hooks([(name, lambda t: seen.append(t.clone()))]):
        model.forward(ids, mask)
    assert len(seen) == 1, f"{name} fired {len(seen)} times"
    return seen[0]


def _hooks_on(model: LoadedModel) -> int:
    trees = [model._hf] + ([model._plain] if model._plain is not None else [])
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for tree in trees for m in tree.modules())


def test_every_routed_hook_sees_the_bridge_tensor(both: dict[str, tuple[LoadedModel, LoadedModel]],
                                                  baseline_hooks: dict[int, int], arch: str) -> None:
    auto, bridge = both[arch]
    names = ["hook_embed", "hook_pos_embed"] + [f"blocks.{layer}.{point}" for layer in range(2) for point in LAYER_POINTS]
    routed = [name for name in names if hook_routes.route(auto._plain, name) is not None]
    # Exactly the hooks each MLP kind has: GPT-2 has learned positions and no linear branch.
    expected_missing = {"blocks.0.mlp.hook_pre_linear", "blocks.1.mlp.hook_pre_linear"} if arch == "gpt2" else {"hook_pos_embed"}
    assert set(names) - set(routed) == expected_missing
    _, mask = _inputs(auto)
    real = mask.bool()
    for name in routed:
        plain, reference = _capture(auto, name), _capture(bridge, name)
        assert auto.running_backend == "plain" and bridge.running_backend == "bridge"
        assert plain.shape == reference.shape, name
        # Padding positions attend to nothing; what the two attention kernels return there
        # differs and is masked everywhere downstream, so only real tokens are compared.
        torch.testing.assert_close(plain[real], reference[real], rtol=1e-5, atol=1e-5, msg=name)
    assert _hooks_on(auto) == baseline_hooks[id(auto)] and _hooks_on(bridge) == baseline_hooks[id(bridge)]


def test_the_twin_shares_the_weights_and_gives_the_same_logits(both: dict[str, tuple[LoadedModel, LoadedModel]],
                                                               arch: str) -> None:
    auto, bridge = both[arch]
    # No second copy of the weights: every twin parameter is storage the bridged model holds.
    held = {param.data_ptr() for param in auto._hf.parameters()}
    assert {param.data_ptr() for param in auto._plain.parameters()} <= held
    ids, mask = _inputs(auto)
    with torch.inference_mode():
        plain, reference = auto.forward(ids, mask).logits, bridge.forward(ids, mask).logits
    real = mask.bool()
    torch.testing.assert_close(plain[real], reference[real], rtol=1e-5, atol=1e-5)
    assert not torch.equal(plain[real], torch.zeros_like(plain[real]))


def _interventions(model: LoadedModel, source: LoadedModel) -> dict[str, object]:
    direction = torch.linspace(-1, 1, model.d_model)
    return {
        "zero": ZeroAblation(NEURONS),
        "scale_keys": ScaleKeys(NEURONS, 5.0),
        "subtract": SubtractDirection(model.mlp_out_hook(1), direction, 3.0),
        "patch_from": PatchFromModel(NEURONS, source),
        "compose": Compose(ZeroAblation(NEURONS), SubtractDirection(model.final_resid_hook, direction, 2.0)),
    }


@pytest.mark.parametrize("which", ["zero", "scale_keys", "subtract", "patch_from", "compose"])
def test_generation_and_statistics_match_the_bridge(both: dict[str, tuple[LoadedModel, LoadedModel]],
                                                    sources: dict[str, tuple[LoadedModel, LoadedModel]],
                                                    baseline_hooks: dict[int, int], arch: str, which: str) -> None:
    auto, bridge = both[arch]
    source_auto, source_bridge = sources[arch]
    config = GenerationConfig(max_new_tokens=6, batch_size=3, n_blocks=2)
    on_auto = generate(auto, PROMPTS, config=config, collect_stats=True,
                       intervention=_interventions(auto, source_auto)[which])
    on_bridge = generate(bridge, PROMPTS, config=config, collect_stats=True,
                         intervention=_interventions(bridge, source_bridge)[which])
    assert torch.equal(on_auto.new_tokens, on_bridge.new_tokens)
    torch.testing.assert_close(on_auto.stats.activation_sum, on_bridge.stats.activation_sum, rtol=1e-5, atol=1e-5)
    plain = generate(auto, PROMPTS, config=config)
    assert not torch.equal(plain.new_tokens, on_auto.new_tokens) or which == "patch_from", "intervention had no effect"
    assert _hooks_on(auto) == baseline_hooks[id(auto)] and _hooks_on(bridge) == baseline_hooks[id(bridge)]


def test_a_hook_without_a_route_moves_every_hook_to_the_bridge_and_back(both: dict[str, tuple[LoadedModel, LoadedModel]],
                                                                         baseline_hooks: dict[int, int], arch: str) -> None:
    auto, bridge = both[arch]
    ids, mask = _inputs(auto)
    with torch.inference_mode(), ZeroAblation(NEURONS).applied(auto), ZeroAblation(NEURONS).applied(bridge):
        assert auto.running_backend == "plain"
        ablated = auto.forward(ids, mask).logits
        seen: list[torch.Tensor] = []
        with auto.hooks([(UNROUTED, lambda t: seen.append(t))]):
            assert auto.running_backend == "bridge"
            # The ablation moved along: the bridge run is ablated too (same as the bridge-only model).
            torch.testing.assert_close(auto.forward(ids, mask).logits, bridge.forward(ids, mask).logits, rtol=0, atol=0)
        assert len(seen) == 1 and auto.running_backend == "plain"
        torch.testing.assert_close(auto.forward(ids, mask).logits, ablated, rtol=0, atol=0)
    assert _hooks_on(auto) == baseline_hooks[id(auto)]


def test_hooks_added_to_the_bridge_directly_run_together_with_ours(both: dict[str, tuple[LoadedModel, LoadedModel]],
                                                                    baseline_hooks: dict[int, int]) -> None:
    """Someone else's hook on ``model.bridge`` sends the call to the bridge, and the active
    intervention goes along: both take effect, exactly as on a bridge-only model."""
    auto, bridge = both["gpt2"]
    ids, mask = _inputs(auto)
    calls: list[str] = []

    def direct(t: torch.Tensor, hook: object) -> torch.Tensor:
        calls.append("direct")
        return t * 0.5

    with torch.inference_mode(), ZeroAblation(NEURONS).applied(auto), ZeroAblation(NEURONS).applied(bridge):
        assert auto.running_backend == "plain"
        with auto.bridge.hooks(fwd_hooks=[("blocks.1.hook_resid_post", direct)]), \
                bridge.bridge.hooks(fwd_hooks=[("blocks.1.hook_resid_post", direct)]):
            assert auto.running_backend == "bridge"
            both_applied = auto.forward(ids, mask).logits
            torch.testing.assert_close(both_applied, bridge.forward(ids, mask).logits, rtol=0, atol=0)
        assert calls == ["direct", "direct"]
        ablated_only = auto.forward(ids, mask).logits
        assert auto.running_backend == "plain"
        assert not torch.allclose(ablated_only, both_applied)
    assert _hooks_on(auto) == baseline_hooks[id(auto)] and auto.running_backend == "plain"


def test_bad_names_and_backends_are_usage_errors(both: dict[str, tuple[LoadedModel, LoadedModel]],
                                                  checkpoints: dict[str, tuple[Path, Path]],
                                                  baseline_hooks: dict[int, int]) -> None:
    auto, _ = both["gpt2"]
    with pytest.raises(UsageError, match=r"no hook point named 'blocks.0.mlp.hook_nothing'.*neuron_hook"):
        with auto.hooks([("blocks.0.mlp.hook_nothing", lambda t: None)]):
            pass
    with pytest.raises(UsageError, match="backend must be one of auto, bridge"):
        load_model(checkpoints["gpt2"][0], backend="fast")  # type: ignore[arg-type]
    assert _hooks_on(auto) == baseline_hooks[id(auto)]


def test_the_bridge_backend_never_runs_the_twin(both: dict[str, tuple[LoadedModel, LoadedModel]]) -> None:
    _, bridge = both["llama"]
    assert bridge._plain is None and bridge.backend == "bridge" and bridge.running_backend == "bridge"


ROUTED_NAMES = ("blocks.0.mlp.hook_post", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post", "hook_embed")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(st.tuples(st.sampled_from((*ROUTED_NAMES, UNROUTED)), st.booleans()), min_size=1, max_size=5))
def test_any_nesting_of_hooks_restores_the_model(both: dict[str, tuple[LoadedModel, LoadedModel]],
                                                 baseline_hooks: dict[int, int], plan: list[tuple[str, bool]]) -> None:
    """Nested hook contexts — routed or not, modifying or not, some raising — always leave the
    model with no hooks, running the twin, and giving the untouched logits bit for bit."""
    auto, _ = both["gpt2"]
    ids, mask = _inputs(auto)
    with torch.inference_mode():
        clean = auto.forward(ids, mask).logits.clone()

    def enter(depth: int) -> None:
        if depth == len(plan):
            with torch.inference_mode():
                auto.forward(ids, mask)
            raise RuntimeError("body failed")
        name, modifies = plan[depth]
        with auto.hooks([(name, (lambda t: t * 0.5) if modifies else (lambda t: None))]):
            enter(depth + 1)

    with pytest.raises(RuntimeError, match="body failed"):
        enter(0)
    assert _hooks_on(auto) == baseline_hooks[id(auto)] and auto._placement._active == [] and auto.running_backend == "plain"
    with torch.inference_mode():
        assert torch.equal(auto.forward(ids, mask).logits, clean)
