"""`naive`: plain fine-tuning, the reference's (and genshift's default) continual method."""

from __future__ import annotations

from protocols.strategies.base import Strategy
from protocols.strategies.registry import BUILTINS


class Naive(Strategy):
    """Fine-tuning: window k starts from window k−1's weights and trains on what the benchmark type hands it.

    No hook is overridden, so the engine runs exactly the plain training step (bit-identical predictions).
    """

    DEFAULTS = BUILTINS["naive"].defaults
