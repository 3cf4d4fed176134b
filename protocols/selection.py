"""Which weights end a window: the selection policy (`train.selection`), decided on the validation split alone.

Policies (docs/selection.md):

- `last` — the weights after the window's last optimizer step (the reference's behaviour);
- `best` — the weights of the evaluation point with the highest validation AUROC (ties go to the later point);
  where the AUROC is undefined at every point (a validation set of one class, or none at all for that window)
  the last weights are kept and the record says why;
- `early_stopping` — `best`, and the window stops once `train.patience` evaluation points in a row bring no AUROC
  above the best so far + `train.min_delta`;
- `average` — the mean of the weights at the window's last `train.average_last` evaluation points (float tensors
  averaged, integer buffers such as BatchNorm's batch count taken from the last point);
- `best_val_accuracy` — LRNet's recipe: every branch keeps the weights of its epoch with the best validation
  segment accuracy (ties to the later epoch, as LRNet's `val_acc >= best`); `train.branch_epochs` stops a branch
  after its own number of epochs.

Evaluation points are the end of every epoch (`train.validate_every_n_steps: 0`) or every N optimizer steps and the
window's last. At each point the validation rows of the window (carved from its training data, or the source's
`val` split; `benchmark.validation_split`) are scored with the current weights; AUROC, loss and accuracy at 0.5 go to
the loggers (`val/auroc`, `val/loss`, `val/accuracy`) and into the window's record. No evaluation row is ever scored
before a window's weights are final: a policy sees nothing but the validation scores.

The state of a policy (history, best weights so far, patience count, running average) travels with the resumable
train state (`protocols.resume`), so a window resumed after a kill selects the same weights as an uninterrupted
one. LRNet's per-branch best weights live in the detector (`selection_state`, part of its trainable state).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import lightning as L
import numpy as np
import torch

from protocols.config_enums import Selection
from protocols.config_model import ConfigLike, TrainConfig, run_config

SELECTIONS = tuple(Selection)
NEEDS_VALIDATION = (Selection.BEST, Selection.EARLY_STOPPING, Selection.BEST_VAL_ACCURACY)


def policy_name(cfg: ConfigLike) -> Selection:
    """The run's selection policy (train.selection, checked when the config was resolved)."""
    return run_config(cfg).train.selection


def check_selection(cfg: ConfigLike, detector, has_validation: bool) -> None:
    """Refuse, before any window trains, a policy the run cannot follow; set LRNet's per-branch epoch limits."""
    tc = run_config(cfg).train
    how = tc.selection
    branch_epochs = dict(tc.branch_epochs or {})
    if branch_epochs:
        names = list(getattr(detector, "branch_names", ()))
        unknown = sorted(set(branch_epochs) - set(names))
        if unknown:
            raise ValueError(f"train.branch_epochs: {detector.meta.name} has branches {names}, not {unknown}")
        too_many = {b: e for b, e in branch_epochs.items() if int(e) > tc.epochs}
        if too_many:
            raise ValueError(f"train.branch_epochs {too_many} exceed train.epochs {tc.epochs}; the window trains "
                             "train.epochs epochs in all (set it to the largest branch count)")
        detector.branch_epochs = {b: (int(branch_epochs[b]) if b in branch_epochs else None) for b in names}
    if how is Selection.BEST_VAL_ACCURACY and not hasattr(detector, "branch_names"):
        from protocols.config_schema import ConfigError

        raise ConfigError(f"train.selection=best_val_accuracy is implemented for the LRNet detectors (per branch); "
                          f"{detector.meta.name} can use train.selection=best (validation AUROC)")
    require_validation(cfg, has_validation)


def require_validation(cfg: ConfigLike, has_validation: bool) -> None:
    """Refuse (ConfigError: one line, exit 2) a policy that needs a validation split in a run without one."""
    from protocols.config_schema import ConfigError

    how = policy_name(cfg)
    if how in NEEDS_VALIDATION and not has_validation:
        raise ConfigError(f"train.selection={how} needs a validation split and this run has none: hold one out of "
                          "the training data with --set train.validation=0.1 (a fraction, or a count per window), or "
                          "use a source with a val split")


def evaluation_points(per_epoch: int, total: int, every_n: int) -> list[int]:
    """Global batch counts (1-based) after which the window is evaluated."""
    if total <= 0:
        return []
    if every_n <= 0:
        return list(range(per_epoch, total + 1, per_epoch)) or [total]
    return sorted(set(range(every_n, total + 1, every_n)) | {total})


def validation_metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    """AUROC (NaN with a reason for one class or no row), balanced-class-free loss and accuracy at 0.5."""
    from leaderboard.metrics import roc_auc, undefined_reason

    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, np.int64)
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    out: dict = {"n": int(y.size), "n_fake": int(y.sum())}
    if y.size == 0:
        return out | {"auroc": float("nan"), "loss": float("nan"), "accuracy": float("nan"),
                      "reason": "no validation row"}
    p = np.clip(s, 1e-7, 1 - 1e-7)
    out["loss"] = float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))
    out["accuracy"] = float(np.mean((s > 0.5) == (y == 1)))
    reason = undefined_reason(y)
    out["auroc"] = float("nan") if reason else roc_auc(y, s)
    if reason:
        out["reason"] = reason
    return out


def _copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


class PolicyCallback(L.Callback):
    """Evaluates the window at its evaluation points and follows the policy (module docstring)."""

    def __init__(self, how: str, detector, score: Callable[[], tuple[np.ndarray, np.ndarray]] | None,
                 points: list[int], per_epoch: int, start: int, total: int, tc: TrainConfig | Mapping,
                 step_offset: int, window: int):
        tc = tc if isinstance(tc, TrainConfig) else run_config({"train": dict(tc)}).train
        self.how, self.detector, self.score = how, detector, score
        self.points, self.per_epoch, self.start, self.total = points, per_epoch, start, total
        self.patience, self.min_delta = tc.patience, tc.min_delta
        n_avg = min(tc.average_last, len(points)) if points else 0
        self.average_from = len(points) - n_avg  # index of the first point averaged
        self.step_offset, self.window = step_offset, window
        self.history: list[dict] = []
        self.best: dict | None = None  # {"step", "auroc", "weights"}
        self.bar = -math.inf  # early stopping: the best AUROC so far (improvements must beat it by min_delta)
        self.wait = 0
        self.stopped_at: int | None = None
        self.avg_sum: dict[str, torch.Tensor] = {}
        self.avg_steps: list[int] = []

    # ------------------------------------------------------------------ resumable state

    def state_dict(self) -> dict:
        return {"history": [dict(h) for h in self.history],
                "best": None if self.best is None else {"step": self.best["step"], "auroc": self.best["auroc"],
                                                        "weights": self.best["weights"]},
                "bar": self.bar, "wait": self.wait, "stopped_at": self.stopped_at,
                "avg_sum": self.avg_sum, "avg_steps": list(self.avg_steps)}

    def load_state_dict(self, state: dict | None) -> None:
        if not state:
            return
        self.history = [dict(h) for h in state["history"]]
        self.best = state["best"]
        self.bar, self.wait, self.stopped_at = float(state["bar"]), int(state["wait"]), state["stopped_at"]
        self.avg_sum, self.avg_steps = dict(state["avg_sum"]), list(state["avg_steps"])

    # ------------------------------------------------------------------ evaluation points

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        done = self.start + batch_idx + 1
        if done not in self.points:
            return
        entry = {"step": done, "epoch": round(done / self.per_epoch, 3)}
        if self.score is not None:
            scores, labels = self.score()
            m = validation_metrics(scores, labels)
            entry |= {k: m[k] for k in ("auroc", "loss", "accuracy", "n")} | (
                {"reason": m["reason"]} if "reason" in m else {})
            if trainer.is_global_zero:
                flat = {f"val/{k}": float(entry[k]) for k in ("auroc", "loss", "accuracy") if entry[k] == entry[k]}
                flat |= {"val/epoch": float(entry["epoch"]), "window": float(self.window)}
                for lg in trainer.loggers:
                    lg.log_metrics(flat, step=self.step_offset + done)
        self.history.append(entry)
        auroc = entry.get("auroc", float("nan"))
        if self.how in ("best", "early_stopping") and auroc == auroc:
            if self.best is None or auroc >= self.best["auroc"]:
                self.best = {"step": done, "auroc": float(auroc), "weights": _copy(self.detector.trainable_state_dict())}
        if self.how == "early_stopping" and done < self.total:
            if auroc == auroc and auroc > self.bar + self.min_delta:
                self.bar, self.wait = float(auroc), 0
            else:
                self.wait += 1
            if self.wait >= self.patience:
                self.stopped_at = done
                trainer.should_stop = True
        if self.how == "average" and self.points.index(done) >= self.average_from:
            for k, v in self.detector.trainable_state_dict().items():
                v = v.detach().cpu()
                if v.is_floating_point():
                    self.avg_sum[k] = self.avg_sum[k] + v.double() if k in self.avg_sum else v.double().clone()
                else:
                    self.avg_sum[k] = v.clone()
            self.avg_steps.append(done)

    # ------------------------------------------------------------------ the window's weights

    def finish(self) -> dict:
        """Give the detector the policy's weights; the window's selection record."""
        last = self.stopped_at or self.total
        record: dict = {"policy": self.how, "evaluations": self.history}
        chosen_step, reason = last, None
        if self.how in ("best", "early_stopping"):
            if self.best is not None:
                self.detector.load_trainable_state_dict(self.best["weights"])
                chosen_step = self.best["step"]
            else:
                why = sorted({h["reason"] for h in self.history if "reason" in h}) or ["no evaluation point"]
                reason = (f"validation AUROC undefined at every evaluation point ({'; '.join(why)}): the last "
                          "weights are kept")
        elif self.how == "average" and self.avg_steps:
            reference = self.detector.trainable_state_dict()
            n = len(self.avg_steps)
            self.detector.load_trainable_state_dict(
                {k: (v / n).to(reference[k].dtype) if v.is_floating_point() else v for k, v in self.avg_sum.items()})
            record["averaged_steps"] = list(self.avg_steps)
            record["averaged_epochs"] = [round(st / self.per_epoch, 3) if self.per_epoch else 0.0
                                         for st in self.avg_steps]
            chosen_step = self.avg_steps[-1]
        if self.stopped_at is not None:
            record["stopped_early_at_step"] = self.stopped_at
        at = next((h for h in self.history if h["step"] == chosen_step), None)
        record["chosen"] = {"step": chosen_step, "epoch": round(chosen_step / self.per_epoch, 3) if self.per_epoch
                            else 0.0, "val_auroc": at.get("auroc") if at else None}
        if self.how == "average":
            record["chosen"]["val_auroc"] = None  # the average was not itself evaluated during training
        if reason:
            record["reason"] = reason
        return record


class EpochTracker(L.Callback):
    """Tells the detector which epoch a training batch belongs to (for its per-branch epoch limits)."""

    def __init__(self, detector, per_epoch: int, start: int):
        self.detector, self.per_epoch, self.start = detector, per_epoch, start

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.detector.epoch = (self.start + batch_idx) // self.per_epoch


def branch_accuracy(detector, ds, batch_size: int) -> dict[str, float]:
    """Segment accuracy of every branch on a labelled segment dataset (argmax of the two-way output)."""
    was = {m: m.training for m in detector.modules()}
    detector.eval()
    correct = {b: 0 for b in detector.branch_names}
    n = 0
    device = next(detector.parameters()).device
    try:
        with torch.no_grad():
            for lo in range(0, len(ds), batch_size):
                items = [ds[i] for i in range(lo, min(len(ds), lo + batch_size))]
                x = torch.stack([it[0] for it in items]).to(device)
                y = torch.stack([it[1] for it in items]).to(device).long()
                for b, (lf, lr) in detector.branch_log_probs(x).items():
                    correct[b] += int(((lf > lr).long() == y).sum())
                n += len(items)
    finally:
        for m, training in was.items():
            m.training = training
    return {b: c / max(n, 1) for b, c in correct.items()}


class BestValidation(L.Callback):
    """`best_val_accuracy`: after every epoch, each still-training branch's validation accuracy; keep its best
    epoch's weights (in the detector's `selection_state`, which its trainable state carries)."""

    def __init__(self, detector, val, per_epoch: int, start: int, total: int, batch_size: int):
        self.detector, self.val, self.per_epoch = detector, val, per_epoch
        self.start, self.total, self.batch_size = start, total, batch_size

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        done = self.start + batch_idx + 1
        if done % self.per_epoch:
            return
        epoch = done // self.per_epoch - 1
        det = self.detector
        accuracy = branch_accuracy(det, self.val, self.batch_size)
        for b in det.branch_names:
            limit = det.branch_epochs.get(b)
            if limit is not None and epoch >= int(limit):
                continue  # the branch stopped training; its best epoch is already recorded
            best = det.selection_state.get(b)
            if best is None or accuracy[b] >= best["acc"]:
                det.selection_state[b] = {"acc": accuracy[b], "epoch": epoch,
                                          "state": {k: v.detach().clone() for k, v in getattr(det, b).state_dict()
                                                    .items()}}
        for b, acc in accuracy.items():
            pl_module.log(f"val/accuracy_{b}", acc, on_step=True, on_epoch=False, batch_size=1)

    def on_train_end(self, trainer, pl_module) -> None:
        """Every branch gets the weights of its best epoch; the choice is recorded on the detector."""
        det = self.detector
        chosen = {}
        for b, best in det.selection_state.items():
            getattr(det, b).load_state_dict(best["state"])
            chosen[b] = {"epoch": int(best["epoch"]) + 1, "val_accuracy": round(float(best["acc"]), 6)}
        det.selection_state = {}
        det.selected = chosen
        if chosen:
            print("[genshift] selected epochs (best validation accuracy): "
                  + ", ".join(f"{b} epoch {c['epoch']} ({c['val_accuracy']:.4f})" for b, c in chosen.items()),
                  flush=True)


class WindowSelection:
    """Selection in one window: its callbacks, resumable state and record (the engine's one handle on it)."""

    def __init__(self, cfg: ConfigLike, detector, k: int, sampler, validation, branch_validation, train_cfg: dict,
                 eval_precision: str, step_offset: int):
        from protocols.scoring_sets import score_on_device

        rc = run_config(cfg)
        self.how = rc.train.selection.value  # a plain string: it goes into the selection record
        self.detector = detector
        tc = rc.train
        points = evaluation_points(sampler.per_epoch, sampler.total, tc.validate_every_n_steps)
        batch = rc.eval.batch_size

        score = None
        if validation is not None and len(validation.samples):
            def score() -> tuple[np.ndarray, np.ndarray]:
                logits = score_on_device(detector, validation, train_cfg, eval_precision, batch)
                return validation.rows(logits)[0], validation.labels

        policy = self.how if self.how != "best_val_accuracy" else "last"
        self.policy = PolicyCallback(policy, detector, score, points, sampler.per_epoch, sampler.start,
                                     sampler.total, tc, step_offset, k)
        self.callbacks: list = []
        if hasattr(detector, "branch_names"):
            self.callbacks.append(EpochTracker(detector, sampler.per_epoch, sampler.start))
        if self.how == "best_val_accuracy":
            if branch_validation is None or len(branch_validation) == 0:
                raise ValueError(f"window {k}: train.selection=best_val_accuracy needs validation videos (reals and "
                                 "the fakes of the window's methods); there are none")
            self.callbacks.append(BestValidation(detector, branch_validation, sampler.per_epoch, sampler.start,
                                                 sampler.total, batch))
        self.callbacks.append(self.policy)

    def state_dict(self) -> dict:
        return self.policy.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        self.policy.load_state_dict(state)

    @property
    def stopped(self) -> bool:
        """Early stopping ended the window (a train state saved at or after the stop: resuming must not train on)."""
        return self.policy.stopped_at is not None

    def finish(self) -> dict:
        record = self.policy.finish()
        if self.how == "best_val_accuracy":
            record["policy"] = self.how
            record["chosen"] = {"branches": dict(getattr(self.detector, "selected", {}) or {})}
        return record

    def line(self, record: dict) -> str | None:
        """One line for the run log (None when there is nothing to say: `last` without a validation split, or
        LRNet's per-branch selection, which prints its own line)."""
        if self.how == "best_val_accuracy":
            return None
        chosen = record.get("chosen", {})
        if self.how == "last":
            last = record["evaluations"][-1] if record.get("evaluations") else {}
            return f"validation AUROC {last['auroc']:.4f} after the last step" if last.get("auroc") == last.get(
                "auroc") and "auroc" in last else None
        if record.get("averaged_steps"):
            text = f"selection average: the weights of steps {record['averaged_steps']} averaged"
        else:
            val = chosen.get("val_auroc")
            text = f"selection {self.how}: epoch {chosen.get('epoch')}" + (
                f" (validation AUROC {val:.4f})" if isinstance(val, float) else "")
        if record.get("stopped_early_at_step"):
            text += f"; stopped early at step {record['stopped_early_at_step']}"
        if record.get("reason"):
            text += f"; {record['reason']}"
        return text
