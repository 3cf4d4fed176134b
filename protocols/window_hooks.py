"""Per-window hooks of the engine, in the style of Lightning's callbacks (DESIGN §9).

The engine's window loop knows no track: localization maps, test datasets, the continual-learning strategy's
bookkeeping and the resume tests' crash injection each attach as a `WindowHook` and are called, in the order they
were registered, at fixed points of every window k:

    before_training(w)       the window's datasets are known, training has not started (a hook may set
                             w.train_dataset / w.extend: the strategy adds its memory to every batch)
    fit_callbacks(w)         Lightning callbacks for the window's fit (before genshift's train-state saver)
    after_training(w)        the detector holds window k's final weights; its checkpoint is not written yet
    scoring_callbacks(w)     callbacks for the eval scoring loop (`on_predict_batch_start`, `protocols.scoring`)
    after_scoring(w)         predictions.npz is written; returns entries for metrics.json (the writing
                             process only: global rank 0)
    before_done(w)           metrics.json is written, the `done` marker not yet (rank 0 only)
    on_window_end(w)         the window is done (every process)
    file_written(w, what, i) a hook or the engine committed a file of the window (`what` names it, `i` counts
                             within the window: a train state's batches, a test dataset's number)

A hook overrides only what it needs. `w` is the `WindowState` of the window: what the engine knows at that point.
Example, a track that writes a file after every window and records it in metrics.json::

    class ScoreHistogram(WindowHook):
        def after_scoring(self, w):
            scores = predictions_file.read(run_dir.predictions_path(w.wdir))["fused_scores"]
            atomic_write_json(w.wdir / "histogram.json", np.histogram(scores, bins=20, range=(0, 1))[0].tolist())
            return {"histogram": "histogram.json"}

The engine builds its list in `protocols.engine.window_hooks`; a track adds its hook there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class WindowState:
    """What the engine knows of window k when it calls a hook; fields fill in as the window proceeds."""

    k: int  # the window (-1: the untrained model, scored before window 0)
    n_windows: int
    wdir: Path | None  # window_<k>/ (None for the untrained model)
    detector: Any
    writer: bool = True  # global rank 0 (the process that writes files)
    say: Callable[[str], None] = print
    identity: dict = dataclasses.field(default_factory=dict)  # run id, config hash, window
    context: Any = None  # the strategy's WindowContext of this window
    train_dataset: Any = None  # what the window trains on (a hook may replace it)
    extend: Callable | None = None  # adds items to every global batch (a strategy's memory)
    batches_done: int = 0  # global batches restored from a train state when the window resumed
    train_metrics: dict = dataclasses.field(default_factory=dict)
    summary: dict = dataclasses.field(default_factory=dict)  # window_summary of predictions.npz
    held_out: dict = dataclasses.field(default_factory=dict)  # validation arrays written into predictions.npz
    notify: Callable[..., None] = lambda what, index=None: None  # (what, index) -> every hook's file_written


class WindowHook:
    """Base class: every method is a no-op; override the ones a track needs."""

    def before_training(self, w: WindowState) -> None:
        """The window's training set is ready; training starts next."""

    def fit_callbacks(self, w: WindowState) -> list:
        """Lightning callbacks to add to the window's fit."""
        return []

    def after_training(self, w: WindowState) -> None:
        """The detector holds the window's final weights; the checkpoint is written after every hook ran."""

    def scoring_callbacks(self, w: WindowState) -> list:
        """Callbacks for the window's eval scoring loop (Lightning's `on_predict_batch_start` signature)."""
        return []

    def after_scoring(self, w: WindowState) -> dict:
        """predictions.npz is written; return entries to add to metrics.json ({} for none)."""
        return {}

    def before_done(self, w: WindowState) -> None:
        """metrics.json is written; the window's `done` marker comes next."""

    def on_window_end(self, w: WindowState) -> None:
        """The window is done (called in every process, after the `done` marker)."""

    def file_written(self, w: WindowState, what: str, index: int | None) -> None:
        """A file of the window was committed (or written to its temporary name, for `*_tmp`)."""


class WindowHooks:
    """The registered hooks, called in order."""

    def __init__(self, hooks: Iterable[WindowHook | None] = ()):
        self.hooks: list[WindowHook] = [h for h in hooks if h is not None]

    def append(self, hook: WindowHook | None) -> None:
        if hook is not None:
            self.hooks.append(hook)

    def before_training(self, w: WindowState) -> None:
        for h in self.hooks:
            h.before_training(w)

    def fit_callbacks(self, w: WindowState) -> list:
        return [cb for h in self.hooks for cb in h.fit_callbacks(w)]

    def after_training(self, w: WindowState) -> None:
        for h in self.hooks:
            h.after_training(w)

    def scoring_callbacks(self, w: WindowState) -> list:
        return [cb for h in self.hooks for cb in h.scoring_callbacks(w)]

    def after_scoring(self, w: WindowState) -> dict:
        out: dict = {}
        for h in self.hooks:
            out |= h.after_scoring(w) or {}
        return out

    def before_done(self, w: WindowState) -> None:
        for h in self.hooks:
            h.before_done(w)

    def on_window_end(self, w: WindowState) -> None:
        for h in self.hooks:
            h.on_window_end(w)

    def file_written(self, w: WindowState, what: str, index: int | None = None) -> None:
        for h in self.hooks:
            h.file_written(w, what, index)

    def state(self, k: int, n_windows: int, wdir: Path | None, detector, **fields) -> WindowState:
        """A new WindowState whose `notify(what, index)` reaches every hook's `file_written`."""
        w = WindowState(k, n_windows, wdir, detector, **fields)
        w.notify = lambda what, index=None: self.file_written(w, what, index)
        return w
