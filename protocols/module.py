"""The LightningModule that trains a detector for one window and scores eval inputs."""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch
import torch.nn.functional as F

from detectors.segmentation import localization_loss


class DetectorModule(L.LightningModule):
    """Wraps a detector: batches are normalised on the fly with the run's input statistics (``train_cfg['normalize']``,
    from `eval.normalize`; default the detector's own mean/std). uint8 batches are pixels, float batches are the
    reference pipeline's [0, 1] tensors, normalised as torchvision's Normalize does.

    A fresh optimizer and LR schedule are made per window (a new module per window), while the
    detector object — hence its weights — carries over.
    """

    def __init__(self, detector: torch.nn.Module, train_cfg: Mapping, total_steps: int, features_in: bool = False,
                 strategy=None, window: int = -1):
        super().__init__()
        # strategy: a continual-learning strategy whose training_loss adds terms to every step (protocols/strategies);
        # None (naive fine-tuning) runs the plain step below unchanged.
        self.strategy, self.window = strategy, window
        # features_in: batches hold a probe's cached backbone features, so only the head runs (same optimizer,
        # schedule and clipping; protocols/feature_cache.py).
        self.features_in = bool(features_in)
        self.detector = detector
        self.train_cfg = dict(train_cfg)
        self.total_steps = max(1, int(total_steps))
        meta = detector.meta
        norm = self.train_cfg.get("normalize") or {}
        mean, std = norm.get("mean", meta.mean), norm.get("std", meta.std)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)
        # torchvision v2 Normalize's operands: float32 (C, 1, 1) statistics, x.sub(mean).div_(std)
        self.register_buffer("mean_unit", torch.as_tensor(list(mean), dtype=torch.float32).view(-1, 1, 1),
                             persistent=False)
        self.register_buffer("std_unit", torch.as_tensor(list(std), dtype=torch.float32).view(-1, 1, 1),
                             persistent=False)
        self.channels_last = bool(self.train_cfg.get("channels_last", False))
        # Sequence detectors (the video track) take float segments as they come: no image normalisation.
        self.raw_inputs = getattr(meta, "input_kind", "image") != "image"
        self.step_offset = 0  # global steps before this fit (earlier windows + batches restored on resume)
        self.class_weights: torch.Tensor | None = None  # (w_real, w_fake) with benchmark.real_sampling=weighted

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 pixels or float [0, 1] tensors -> normalised float. The arithmetic runs on the batch's own contiguous
        layout and only the result changes layout: per-channel broadcasting over a channels-last tensor is ~7×
        slower on CPU. Float input takes torchvision's exact operations (the reference pipeline's bits)."""
        if x.is_floating_point():
            x = x.to(torch.float32).sub(self.mean_unit).div_(self.std_unit)
        else:
            x = x.float().sub_(self.mean).div_(self.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def logits(self, x: torch.Tensor, detector: torch.nn.Module | None = None) -> torch.Tensor:
        """(N,) float32 logits from uint8 pixels, or from cached features when features_in; ``detector``: another
        model with the same input contract (a strategy's teacher) instead of this module's."""
        det = self.detector if detector is None else detector
        if self.features_in:
            out = det.head_forward(x)
        else:
            out = det(x if self.raw_inputs else self.normalise(x))
        return out.float()

    def localization_loss(self, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor,
                          valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image BCE + class-balanced pixel BCE (detectors.segmentation.localization_loss) of a map detector.

        Under DDP each process takes the mean over its own part of the batch and DDP averages them, which equals
        the global mean when the parts are equally large (the plain image path below is exact in every case).
        Returns (loss, image logits).
        """
        if self.features_in:
            raise RuntimeError(f"{self.detector.meta.name}: a localization batch cannot train on cached probe "
                               "features (the decoder needs the backbone's feature pyramid)")
        logits, maps = self.detector.forward_with_map(self.normalise(x))
        loss, parts = localization_loss(logits.float(), maps.float(), y, masks.float(), valid)
        if self.logs_this_step():
            for name, value in parts.items():
                self.log(f"train/loss_{name}", value, on_step=True, on_epoch=False, batch_size=len(y))
        return loss, logits.float()

    def logs_this_step(self) -> bool:
        """Whether Lightning hands this step's metrics to the loggers (every `log_every_n_steps`). `self.log`
        costs about a millisecond a call, a tenth of a probe head's step, so the other steps skip it."""
        return self.trainer._logger_connector.should_update_logs

    def training_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        if len(batch) == 5:  # a localization detector's batch: pixels, labels, ids, pixel targets, target counts
            loss, logits = self.localization_loss(x, y, batch[3], batch[4])
        elif hasattr(self.detector, "training_loss"):  # a detector with its own loss (LRNet: NLL per branch)
            loss = self.detector.training_loss(x, y, weights=self.class_weights)
            logits = None  # a strategy that needs them gets the detector's fused logits (one more forward)
        elif self.class_weights is not None:
            if self.trainer.world_size > 1:
                raise RuntimeError("benchmark.real_sampling=weighted runs in one process")
            w = self.class_weights.to(y.device)[y.long()]
            logits = self.logits(x)
            loss = F.binary_cross_entropy_with_logits(logits, y.float(), weight=w)
        elif getattr(self.detector.meta, "has_localization", False):
            raise RuntimeError(f"{self.detector.meta.name} has a localization head but its training batches carry "
                               "no pixel targets; build the training dataset with masks=True (run_inputs does)")
        elif self.trainer.world_size > 1:
            logits = self.logits(x)
            # DDP averages gradients over ranks; scale so the result is the mean over the *global* batch even
            # when its parts differ in size (the same gradient as one process on the whole batch).
            n = torch.tensor([float(len(y))], device=logits.device)
            torch.distributed.all_reduce(n)
            loss = F.binary_cross_entropy_with_logits(logits, y.float(), reduction="sum") \
                * (self.trainer.world_size / n.item())
        else:
            logits = self.logits(x)
            loss = F.binary_cross_entropy_with_logits(logits, y.float())
        if self.strategy is not None:
            loss = self.strategy_loss(batch, logits, loss)
        if not self.logs_this_step():
            return loss
        # One step axis for all windows and resumed attempts: the "step" metric sets the loggers' step.
        self.log("step", float(self.step_offset + batch_idx + 1), on_step=True, on_epoch=False, batch_size=len(y))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=len(y))
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False,
                 batch_size=len(y))
        return loss

    def strategy_loss(self, batch, logits: torch.Tensor | None, loss: torch.Tensor) -> torch.Tensor:
        """The plain loss with the strategy's terms added (or its base replaced); each term is logged.

        ``logits`` None (a detector with its own training loss): the strategy sees the detector's forward."""
        from protocols.strategies.base import TrainStep
        from protocols.strategies.hooks import step_terms

        if logits is None:
            logits = self.logits(batch[0])
        weights = None if self.class_weights is None else self.class_weights.to(logits.device)[batch[1].long()]
        step = TrainStep(x=batch[0], y=batch[1], ids=torch.as_tensor(batch[2], device=logits.device), logits=logits,
                         loss=loss, window=self.window, forward=self.logits, world=self.trainer.world_size,
                         weights=weights, own_loss=hasattr(self.detector, "training_loss"))
        terms = step_terms(self.strategy, step)
        if self.logs_this_step():
            for name, value in terms.items():
                self.log(f"train/loss_{name}", value, on_step=True, on_epoch=False, batch_size=len(batch[1]))
        return sum(terms.values())

    def predict_step(self, batch, batch_idx):
        x, pos = batch
        return self.logits(x), pos

    def configure_optimizers(self):
        cfg = self.train_cfg
        params = [p for p in self.detector.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError("the detector has no trainable parameters")
        name = cfg["optimizer"]
        if name == "sgd":
            opt = torch.optim.SGD(
                params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"]
            )
        elif name == "adamw":
            opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        elif name == "adam":  # LRNet's recipe: plain Adam (no weight decay)
            opt = torch.optim.Adam(params, lr=cfg["lr"])
        else:
            raise ValueError(f"train.optimizer: unknown optimizer {name!r}; expected sgd, adam or adamw")
        sched = cfg["scheduler"]
        if sched == "constant":
            return opt
        if sched != "onecycle":
            raise ValueError(f"train.scheduler: unknown scheduler {sched!r}; expected onecycle or constant")
        one_cycle = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=self.total_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": one_cycle, "interval": "step"}}


class ClassWeights(L.Callback):
    """Sets a window's class weights on the module when training starts (benchmark.real_sampling=weighted)."""

    def __init__(self, weights: tuple[float, float]):
        self.weights = torch.tensor([float(weights[0]), float(weights[1])])

    def on_fit_start(self, trainer, pl_module) -> None:
        pl_module.class_weights = self.weights
