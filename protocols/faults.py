"""Crash injection for the resume tests: GENSHIFT_DIE_AT=<point>:<window>[:<index>[:<SIGNAL>]][,…] makes the
process SIGKILL itself when it reaches that point (no cleanup, no atexit — like a node failure or an OOM
kill), or send itself another signal (e.g. USR1, TERM: a preemption notice at a known moment).

Points: train_batch (index = global batches done), train_state_tmp (a train state written to its temporary
name, not yet renamed), predict_batch (index = eval batches done), predictions_tmp (predictions.npz written
to its temporary name), strategy_state (a continual-learning strategy's state after the window written, the
window's checkpoint not yet), test_dataset (index = test datasets whose predictions are written), before_done
(metrics.json written, `done` not yet), store_chunk (window 0; index = cache-store chunks this process has
written).

The engine attaches `FaultInjection` as one of its window hooks (protocols/window_hooks.py) only when the
variable is set; the two points inside a file write (predictions_tmp, store_chunk) call `die_if` from their
writer.
"""

from __future__ import annotations

import os
import signal

from protocols.window_hooks import WindowHook, WindowState

ENV = "GENSHIFT_DIE_AT"


def die_if(point: str, window: int, index: int | None = None) -> None:
    """SIGKILL this process if GENSHIFT_DIE_AT names this point, window and (when given) index."""
    for spec in filter(None, os.environ.get(ENV, "").split(",")):
        parts = spec.split(":")
        if parts[0] != point or int(parts[1]) != int(window):
            continue
        if len(parts) > 2 and parts[2] != "" and (index is None or int(parts[2]) != int(index)):
            continue
        sig = signal.Signals[f"SIG{parts[3]}"] if len(parts) > 3 else signal.SIGKILL
        os.kill(os.getpid(), sig)


class FaultInjection(WindowHook):
    """The window hook that dies at the points GENSHIFT_DIE_AT names (register it last: after the hooks whose
    files it interrupts)."""

    def scoring_callbacks(self, w: WindowState) -> list:
        return [_predict_fault_callback(w.k)]

    def file_written(self, w: WindowState, what: str, index: int | None) -> None:
        die_if(what, w.k, index)

    def before_done(self, w: WindowState) -> None:
        die_if("before_done", w.k)


def fault_hook() -> FaultInjection | None:
    """The crash-injection hook when GENSHIFT_DIE_AT is set, else None (nothing attached)."""
    return FaultInjection() if os.environ.get(ENV) else None


def _predict_fault_callback(window: int):
    """A Lightning callback dying at predict_batch (train_batch is notified by the train-state saver, right before
    its stop check, so that a signal arriving while the process is stopped there is seen at that batch)."""
    import lightning as L

    class _Faults(L.Callback):
        def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
            die_if("predict_batch", window, batch_idx + 1)

    return _Faults()
