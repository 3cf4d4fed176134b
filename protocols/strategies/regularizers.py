"""`ewc` and `mas`: a quadratic penalty that holds each trained parameter near its value after the last window,
in proportion to an importance estimated after every window.

penalty = lambda * sum_i importance_i * (theta_i - theta*_i)^2 over the parameters a window trains (the head only
for probes), theta* = the weights after the previous window; no penalty while window 0 trains. As in
Avalanche's EWCPlugin and MASPlugin (no 1/2 factor), the importance of a window is a mean over minibatches
(the window's images, first augmented copy each, `train.batch_size` per batch, the model in eval mode, fp32):

- EWC (online, Schwarz et al. 2018): the diagonal empirical Fisher, mean of the squared gradient of the
  minibatch's mean BCE; accumulated over windows as F <- gamma * F + F_window.
- MAS (Aljundi et al. 2018): mean of |gradient| of the minibatch's mean squared logit (the squared L2 norm of the
  one-logit output); blended over windows as Omega <- alpha * Omega + (1 - alpha) * Omega_window. Avalanche
  runs this pass in train mode; genshift keeps eval mode so that no BatchNorm statistic moves outside training.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from protocols.strategies.base import Strategy, TrainStep, WindowContext, trainable_named_parameters
from protocols.strategies.registry import BUILTINS


def importance(window: WindowContext, kind: str) -> dict[str, torch.Tensor]:
    """Per-parameter importance of the window's detector on its images: ``fisher`` or ``mas`` (CPU tensors)."""
    if kind not in ("fisher", "mas"):
        raise ValueError(f"importance kind must be fisher or mas, got {kind!r}")
    with window.evaluating() as det:
        params = trainable_named_parameters(det)
        acc = {n: torch.zeros_like(p) for n, p in params.items()}
        n_batches = 0
        with torch.enable_grad():
            for batch in window.batches(window.first_copies()):
                x, y = batch[0], batch[1]
                z = window.logits(x).float()
                loss = F.binary_cross_entropy_with_logits(z, y.float()) if kind == "fisher" else z.pow(2).mean()
                grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
                for (n, _), g in zip(params.items(), grads, strict=True):
                    if g is not None:
                        acc[n] += g.pow(2) if kind == "fisher" else g.abs()
                n_batches += 1
        return {n: (a / max(n_batches, 1)).detach().cpu() for n, a in acc.items()}


class QuadraticPenalty(Strategy):
    """lambda * sum importance * (theta - theta*)^2; subclasses say how importance is estimated and accumulated."""

    kind = ""

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.theta: dict[str, torch.Tensor] = {}  # weights after the last window (CPU)
        self.importance: dict[str, torch.Tensor] = {}
        self._params: dict[str, torch.nn.Parameter] = {}
        self._on_device: tuple[torch.device | None, dict, dict] = (None, {}, {})

    def accumulate(self, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def before_training(self, window: WindowContext) -> None:
        self._params = trainable_named_parameters(window.detector)
        self._on_device = (None, {}, {})
        if self.theta and set(self.theta) != set(self._params):
            raise RuntimeError(f"{self.name}: the saved parameters {sorted(set(self.theta) ^ set(self._params))[:5]} "
                               "differ from the detector's trainable ones; the run's strategy state is not this run's")

    def penalty(self) -> torch.Tensor:
        """sum_i importance_i * (theta_i - theta*_i)^2 over the trained parameters."""
        device = next(iter(self._params.values())).device
        if self._on_device[0] != device:  # move the saved tensors once per device
            self._on_device = (device, {n: t.to(device) for n, t in self.theta.items()},
                               {n: t.to(device) for n, t in self.importance.items()})
        _, theta, imp = self._on_device
        return sum((imp[n] * (p - theta[n]).pow(2)).sum() for n, p in self._params.items())

    def training_loss(self, step: TrainStep) -> dict[str, torch.Tensor]:
        if not self.importance:
            return {}
        return {self.name or self.kind: self.params["lambda"] * self.penalty()}

    def after_training(self, window: WindowContext) -> None:
        new = importance(window, self.kind)
        self.importance = {n: self.accumulate(self.importance[n], v) if n in self.importance else v
                           for n, v in new.items()}
        self.theta = {n: p.detach().cpu().clone() for n, p in trainable_named_parameters(window.detector).items()}
        self._on_device = (None, {}, {})

    def state_dict(self) -> dict[str, Any]:
        return {"theta": dict(self.theta), "importance": dict(self.importance)} if self.importance else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.theta = {n: t.clone() for n, t in state.get("theta", {}).items()}
        self.importance = {n: t.clone() for n, t in state.get("importance", {}).items()}
        self._on_device = (None, {}, {})


class EWC(QuadraticPenalty):
    """Online Elastic Weight Consolidation: diagonal Fisher accumulated over windows with decay gamma."""

    DEFAULTS = BUILTINS["ewc"].defaults
    kind = "fisher"

    def accumulate(self, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return self.params["gamma"] * old + new


class MAS(QuadraticPenalty):
    """Memory Aware Synapses: importance = mean |d (logit^2) / d theta|, blended over windows with alpha."""

    DEFAULTS = BUILTINS["mas"].defaults
    kind = "mas"

    def accumulate(self, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return self.params["alpha"] * old + (1.0 - self.params["alpha"]) * new
