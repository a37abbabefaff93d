"""Top-level conftest: settings that every test run of this repository shares."""

from __future__ import annotations

import os

# TransformerLens 4 pulls in wandb; never let a test run try to reach its servers.
os.environ.setdefault("WANDB_MODE", "disabled")
