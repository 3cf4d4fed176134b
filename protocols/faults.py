"""Crash injection for the resume tests: GENSHIFT_DIE_AT=<point>:<window>[:<index>[:<SIGNAL>]][,…] makes the
process SIGKILL itself when it reaches that point (no cleanup, no atexit — like a node failure or an OOM
kill), or send itself another signal (e.g. USR1, TERM: a preemption notice at a known moment).

Points: train_batch (index = global batches done), train_state_tmp (a train state written to its temporary
name, not yet renamed), predict_batch (index = eval batches done), predictions_tmp (predictions.npz written
to its temporary name), strategy_state (a continual-learning strategy's state after the window written, the
window's checkpoint not yet), before_done (metrics.json written, `done` not yet), store_chunk (window 0; index =
cache-store chunks this process has written).
"""

from __future__ import annotations

import os
import signal

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
