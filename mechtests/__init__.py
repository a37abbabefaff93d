"""mechtests: pytest for mechanistic claims about a base language model and its fine-tuned twin.

``import mechtests as mt`` gives the names a claim author needs; each is imported on first use,
so importing the package loads neither torch nor transformers (a notebook, a CI job reading a
report, and ``pytest --help`` stay fast).

Stability: the names in ``__all__`` keep their meaning and signatures within a minor version
(0.x: additions only; a change is announced one minor version ahead, with the old form still
working). Everything else (module-level names not listed here, underscored names, the plugin's
internals) may change without notice.

Example:
    $ pytest hypotheses/                      # the reference claims on the embedded default pair
    $ pytest hypotheses/ --mt-base A --mt-tuned B

    >>> import mechtests as mt
    >>> mt.evaluate_claim("identity", metric="residual", direction="<", threshold=1e-4, estimate=0.0).verdict
    'pass'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it (the one home of each)
_EXPORTS: dict[str, str] = {
    # claims and their statistics (torch-free)
    "evaluate_claim": "mechtests.claims", "ClaimResult": "mechtests.claims", "Reference": "mechtests.claims",
    "verdict_for": "mechtests.claims",
    "Estimate": "mechtests.stats", "bootstrap_estimate": "mechtests.stats", "proportion_estimate": "mechtests.stats",
    "ratio_estimate": "mechtests.stats", "mean_estimate": "mechtests.stats", "sign_fraction_estimate": "mechtests.stats",
    "transformed": "mechtests.stats", "family_confidence": "mechtests.stats", "holm": "mechtests.stats",
    "cross_fitted": "mechtests.stats",
    # running conditions; effects on a pair (torch-free claim statistics)
    "Evaluator": "mechtests.evaluator", "PerplexityWindows": "mechtests.evaluator",
    "BlockAttribution": "mechtests.effects", "recovered": "mechtests.effects",
    "relative_reduction": "mechtests.effects", "ratio": "mechtests.effects", "GROUP_NAMES": "mechtests.effects",
    "MIRROR_NAMES": "mechtests.effects", "group_masks": "mechtests.effects",
    # interventions
    "Intervention": "mechtests.interventions", "NoIntervention": "mechtests.interventions",
    "ZeroAblation": "mechtests.interventions", "MeanAblation": "mechtests.interventions",
    "PatchActivations": "mechtests.interventions", "PatchFromModel": "mechtests.interventions",
    "ScaleKeys": "mechtests.interventions", "SubtractDirection": "mechtests.interventions",
    "Compose": "mechtests.interventions",
    # neuron selection
    "NeuronSet": "mechtests.neurons", "neuron_cosines": "mechtests.neurons", "top_k_by_cosine": "mechtests.neurons",
    "classify_neurons": "mechtests.neurons", "group_rule": "mechtests.neurons",
    "NeuronSelections": "mechtests.selections",
    # premises a claim presupposes (fail with the reason, never pass on nothing)
    "require_reduction": "mechtests.premises", "require_change": "mechtests.premises",
    "require_toxic_base": "mechtests.premises", "require_linear_neuron_writes": "mechtests.premises",
    # loading
    "load_pair": "mechtests.models", "load_model": "mechtests.models", "ModelPair": "mechtests.models",
    "LoadedModel": "mechtests.models",
    "Probe": "mechtests.probes", "load_probe": "mechtests.probes", "train_probe": "mechtests.probes",
    "save_probe": "mechtests.probes",
    "TextSet": "mechtests.data", "load_prompts": "mechtests.data", "load_labelled": "mechtests.data",
    "make_scorer": "mechtests.scoring", "ToxicityScorer": "mechtests.scoring",
    "RunConfig": "mechtests.config", "run_config": "mechtests.config",
    # a notebook session: what pytest builds for one pair, from the same options
    "session": "mechtests.builders", "Session": "mechtests.builders",
    # several conditions in one pass; the interventions table
    "row_batchable": "mechtests.interventions", "ConditionLog": "mechtests.conditions",
    # errors a caller may catch
    "MechtestsError": "mechtests.errors", "UsageError": "mechtests.errors", "CheckpointError": "mechtests.errors",
    "DataError": "mechtests.errors", "NumericalError": "mechtests.errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mechtests' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # import once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
