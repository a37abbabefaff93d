"""The papers' 13 conditions (PAPER.md, "Interventions and results"), their labels and the paper's values.

One definition serves the interventions table of every run (`label_conditions`, added to each
evaluator by ``conftest.py``: the conditions the claims used get the paper's name and numbers)
and the protocol run (``protocol_table.py``: all 13 computed, without the claims). The neuron
selections are the claims' own (`mechtests.selections`), so a condition here and in a claim is
one cache entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from mt_reference import frac

from mechtests.evaluator import Evaluator

# (toxicity, perplexity, F1) of GPT-2 medium in PAPER.md's table.
Paper = dict[str, float]


def _paper(tox: float, ppl: float, f1: float) -> Paper:
    return {"toxicity": tox, "perplexity": ppl, "f1": f1}


@dataclasses.dataclass(frozen=True)
class ProtocolCondition:
    """One row of the papers' table: which model, which intervention (built from the evaluator's
    selections), and the paper's values. ``needs``: the roles whose plain generation the selection
    reads (mean activations), so labelling never starts a computation."""

    name: str
    role: str
    label: str
    paper: Paper
    build: Callable[[Evaluator], Any]
    needs: tuple[str, ...] = ()


def _k(ev: Evaluator, paper_k: int) -> int:
    """k of GPT-2 medium's 98,304 neurons scaled to this model: the claims' own rule (`mt_reference.frac`)."""
    base = ev.model("base")
    return frac(paper_k).resolve(base.n_layers * base.d_mlp)


class Unavailable(Exception):
    """The condition cannot be built on this pair (the reason is the message)."""


def _require_neuron_writes(ev: Evaluator) -> None:
    """Selections by value vector need neuron i to write a_i w_i (`LoadedModel.require_linear_neuron_writes`)."""
    for role in ("base", "tuned"):
        model = ev.model(role)
        if model.has_post_sublayer_norms:
            raise Unavailable(f"undefined on {model.architecture}: its MLP output passes a norm before the residual "
                              "stream, so a value vector is not what a neuron writes")


def _top_toxic(ev: Evaluator, k: int, *, positive_only: bool = False) -> Any:
    from mechtests.selections import NeuronSelections

    _require_neuron_writes(ev)
    sel = NeuronSelections(ev)
    if k > sel.n_neurons:
        raise Unavailable(f"k={k} exceeds the model's {sel.n_neurons} MLP neurons")
    if positive_only and k > sel.n_positive_toxic():
        raise Unavailable(f"k={k} exceeds the {sel.n_positive_toxic()} toxic, positively activated neurons")
    return sel.top_toxic(k, positive_only=positive_only)


def _zero(paper_k: int, *, positive_only: bool = False) -> Callable[[Evaluator], Any]:
    def build(ev: Evaluator) -> Any:
        from mechtests.interventions import ZeroAblation

        return ZeroAblation(_top_toxic(ev, _k(ev, paper_k), positive_only=positive_only))

    return build


def _patch_tp_down(ev: Evaluator) -> Any:
    from mechtests.interventions import PatchFromModel
    from mechtests.selections import NeuronSelections

    _require_neuron_writes(ev)
    return PatchFromModel(NeuronSelections(ev).groups()["TP_down"], source=ev.model("tuned"))


def _scale_keys(factor: float) -> Callable[[Evaluator], Any]:
    def build(ev: Evaluator) -> Any:
        from mechtests.interventions import ScaleKeys

        return ScaleKeys(_top_toxic(ev, 7), factor)  # B: the top-7 toxic neurons, whatever the model's size

    return build


PROTOCOL: tuple[ProtocolCondition, ...] = (
    ProtocolCondition("base", "base", "no intervention", _paper(0.453, 21.70, 0.193), lambda ev: None),
    ProtocolCondition("tuned", "tuned", "no intervention (DPO)", _paper(0.208, 23.34, 0.195), lambda ev: None),
    *(ProtocolCondition(f"zero_top{k}", "base", f"zero top {k}/98,304 toxic value vectors", _paper(*v), _zero(k))
      for k, v in ((100, (0.403, 21.99, 0.192)), (200, (0.405, 22.41, 0.192)), (1000, (0.436, 27.34, 0.184)))),
    *(ProtocolCondition(f"zero_positive_top{k}", "base", f"zero top {k}/98,304 toxic & positively activated",
                        _paper(*v), _zero(k, positive_only=True), needs=("base",))
      for k, v in ((100, (0.384, 21.78, 0.193)), (200, (0.366, 21.83, 0.193)), (1000, (0.320, 30.04, 0.191)),
                   (2000, (0.319, 29.07, 0.189)))),
    ProtocolCondition("patch_tp_down", "base", "patch TP↓ to the tuned model's activations",
                      _paper(0.335, 21.69, 0.190), _patch_tp_down, needs=("base", "tuned")),
    *(ProtocolCondition(f"unalign_x{s:g}", "tuned", f"scale top-7 toxic key vectors x{s:g}", _paper(*v),
                        _scale_keys(s))
      for s, v in ((2.0, (0.487, 21.72, 0.192)), (5.0, (0.555, 23.36, 0.188)), (10.0, (0.458, 37.33, 0.183)))),
)
# Conditions the claims use beyond the papers' table: labelled too, without paper values.
EXTRA: tuple[ProtocolCondition, ...] = (
    ProtocolCondition("zero_top2000", "base", "zero top 2000/98,304 toxic value vectors", {}, _zero(2000)),
)
# B's steering rows, labelled by the claim that picks alpha (test_claims_steering.py).
PROBE_SUBTRACTION_PAPER = _paper(0.245, 23.56, 0.193)


def label_for(c: ProtocolCondition, intervention: Any) -> str:
    """The row's name, with how many neurons it touches on this pair (scaled from GPT-2 medium's
    98,304, so several of the papers' rows can be one condition on a small model)."""
    neurons = getattr(intervention, "neurons", None)
    return c.label if neurons is None else f"{c.label} ({len(neurons)} neurons here)"


def build_conditions(ev: Evaluator) -> list[tuple[ProtocolCondition, Any, str | None]]:
    """``(condition, intervention, None)`` for each of the 13 that this pair can run, else
    ``(condition, None, reason)``; computes the selections' prerequisites (plain generations)."""
    out: list[tuple[ProtocolCondition, Any, str | None]] = []
    for c in PROTOCOL:
        try:
            out.append((c, c.build(ev), None))
        except Unavailable as exc:
            out.append((c, None, str(exc)))
    return out


def label_conditions(ev: Evaluator) -> None:
    """Name every protocol condition this session's claims used (a labeller: see
    `Evaluator.labellers`). Only conditions whose selections are free (their generations already
    served) are built, so labelling never computes a condition."""
    for order, c in enumerate(PROTOCOL + EXTRA):
        if not all(ev.conditions.has(role) for role in c.needs):
            continue
        try:
            intervention = c.build(ev)
        except Unavailable:
            continue
        ev.label_condition(c.role, intervention, label_for(c, intervention), paper=c.paper,  # type: ignore[arg-type]
                           order=order)
