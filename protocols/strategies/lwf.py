"""`lwf`: Learning without Forgetting (Li & Hoiem 2017) in the binary form genshift's one-logit detectors need.

While window k > 0 trains, the previous window's model (a frozen copy of the weights window k starts from, in
eval mode) scores the same batch; the loss adds

    alpha * mean over the batch of BCE(sigmoid(z / T), sigmoid(z_prev / T))

(soft-target binary cross-entropy at temperature T). A 1-logit sigmoid is the 2-class softmax of (0, z), so this is
Avalanche's LwF distillation (KL divergence of the softened outputs, batch mean, no T^2 factor) plus the teacher's
entropy, a constant: the same gradients. The teacher is rebuilt from window k−1's weights whenever window k
(re)starts, so it needs no saved state.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from protocols.strategies.base import Strategy, TrainStep, WindowContext
from protocols.strategies.registry import BUILTINS, StrategyConfigError


def distillation_bce(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-row BCE between sigmoid(student / T) and the soft target sigmoid(teacher / T)."""
    return F.binary_cross_entropy_with_logits(student / temperature, torch.sigmoid(teacher / temperature),
                                              reduction="none")


class LwF(Strategy):
    """Learning without Forgetting: distil the previous window's model into this one on the current data."""

    DEFAULTS = BUILTINS["lwf"].defaults

    def __init__(self, params=None) -> None:
        super().__init__(params)
        if self.params["temperature"] <= 0:
            raise StrategyConfigError(f"cl_strategy.temperature must be > 0, got {self.params['temperature']}")
        self.teacher: torch.nn.Module | None = None

    def before_training(self, window: WindowContext) -> None:
        self.teacher = None
        if window.k > 0:
            self.teacher = copy.deepcopy(window.detector).eval().requires_grad_(False)

    def training_loss(self, step: TrainStep) -> dict[str, torch.Tensor]:
        if self.teacher is None:
            return {}
        with torch.no_grad():
            self.teacher.to(step.x.device)
            target = step.forward(step.x, self.teacher).float()
        per_row = distillation_bce(step.logits, target, self.params["temperature"])
        return {"lwf": self.params["alpha"] * step.mean(per_row)}

    def after_training(self, window: WindowContext) -> None:
        self.teacher = None  # the next window snapshots its own
