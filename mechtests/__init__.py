"""mechtests: pytest for mechanistic claims about a base language model and its fine-tuned twin.

Example:
    $ pytest hypotheses/                      # the reference claims on the embedded default pair
    $ pytest hypotheses/ --mt-base A --mt-tuned B
"""

from __future__ import annotations

__version__ = "0.1.0"
