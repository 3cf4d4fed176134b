"""Per-branch epoch limits and best-validation-accuracy selection inside a window (LRNet's training recipe).

`train.branch_epochs` ({g1: 750, g2: 400} in LRNet's configs) stops a branch after its own number of epochs;
`train.selection: best_val_accuracy` evaluates every branch on the window's validation videos after each epoch
and keeps, per branch, the weights of the epoch with the best segment accuracy (ties go to the later epoch:
LRNet saves when `val_acc >= best`). The validation videos come from the source's `val` split (LRNet's layout
has one): the val fakes of the methods the window trains on plus every val real once
(`sequence_inputs.validation_ids`); no evaluation data is read before the window's weights are final.

The best weights so far live in the detector (`selection_state`), so the resumable train state saved by
protocols.resume holds them and a resumed window selects the same epoch as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch

SELECTIONS = ("last", "best_val_accuracy")


def selection_callbacks(cfg: dict, detector, make_val: Callable, say: Callable[[str], None]) -> Callable:
    """callbacks(k, ids, sampler) for RunInputs: the epoch tracker, plus the selection when asked for."""
    tc = cfg["train"]
    how = str(tc.get("selection") or "last")
    if how not in SELECTIONS:
        raise ValueError(f"train.selection: unknown value {how!r}; expected one of {SELECTIONS}")
    branch_epochs = tc.get("branch_epochs") or {}
    if branch_epochs:
        names = list(getattr(detector, "branch_names", ()))
        unknown = sorted(set(branch_epochs) - set(names))
        if unknown:
            raise ValueError(f"train.branch_epochs: {detector.meta.name} has branches {names}, not {unknown}")
        too_many = {b: e for b, e in branch_epochs.items() if int(e) > int(tc["epochs"])}
        if too_many:
            raise ValueError(f"train.branch_epochs {too_many} exceed train.epochs {tc['epochs']}; the window trains "
                             "train.epochs epochs in all (set it to the largest branch count)")
        detector.branch_epochs = {b: (int(branch_epochs[b]) if b in branch_epochs else None) for b in names}
    if how == "best_val_accuracy" and not hasattr(detector, "branch_names"):
        raise ValueError(f"train.selection=best_val_accuracy is implemented for the LRNet detectors (per branch); "
                         f"{detector.meta.name} trains with train.selection=last")

    def callbacks(k: int, ids: list[int], sampler) -> list:
        out: list = [EpochTracker(detector, sampler.per_epoch, sampler.start)]
        if how == "best_val_accuracy":
            val = make_val(ids)
            if len(val) == 0:
                raise ValueError(f"window {k}: train.selection=best_val_accuracy needs validation videos (the "
                                 "source's val split: reals and the fakes of the window's methods); there are none")
            say(f"window {k + 1}: selecting each branch's best epoch on {len(val)} validation segments")
            out.append(BestValidation(detector, val, sampler.per_epoch, sampler.start, sampler.total,
                                      int(cfg["eval"]["batch_size"])))
        return out

    return callbacks


class EpochTracker(L.Callback):
    """Tells the detector which epoch a training batch belongs to (for its per-branch epoch limits)."""

    def __init__(self, detector, per_epoch: int, start: int):
        self.detector, self.per_epoch, self.start = detector, per_epoch, start

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.detector.epoch = (self.start + batch_idx) // self.per_epoch


def branch_accuracy(detector, ds, batch_size: int) -> dict[str, float]:
    """Segment accuracy of every branch on a labelled segment dataset (argmax of the two-way output)."""
    was = detector.training
    detector.eval()
    correct = {b: 0 for b in detector.branch_names}
    n = 0
    device = next(detector.parameters()).device
    with torch.no_grad():
        for lo in range(0, len(ds), batch_size):
            items = [ds[i] for i in range(lo, min(len(ds), lo + batch_size))]
            x = torch.stack([it[0] for it in items]).to(device)
            y = torch.stack([it[1] for it in items]).to(device).long()
            for b, (lf, lr) in detector.branch_log_probs(x).items():
                correct[b] += int(((lf > lr).long() == y).sum())
            n += len(items)
    detector.train(was)
    return {b: c / max(n, 1) for b, c in correct.items()}


class BestValidation(L.Callback):
    """After every epoch: each still-training branch's validation accuracy; keep its best epoch's weights."""

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
