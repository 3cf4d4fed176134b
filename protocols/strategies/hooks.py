"""The continual-learning strategy as one of the engine's window hooks (protocols/window_hooks.py).

Per window k the engine calls `window` (the strategy's context, kept in the window state) and then, as for every
hook: `before_training` (sets the window's training dataset and batch extension) → `restore_in_window` when it
resumes inside the window → the training step calls `step_terms` → `after_training` (runs the strategy's hook,
then saves its state in ``window_<k>/strategy_state.pt`` before the window's checkpoint marks it trained) →
`on_window_end` (the strategy's `after_scoring`). On resume, `restore_after(k)` loads the state saved after the
last finished window. Nothing else in the engine knows about strategies.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from common.atomic import atomic_path
from protocols.config_model import ConfigLike, run_config, thawed
from protocols.strategies.base import BatchExtension, Strategy, TrainStep, WindowContext
from protocols.strategies.registry import create_strategy
from protocols.window_hooks import WindowHook, WindowState

STATE_FILE = "strategy_state.pt"
STATE_FORMAT = 1


class MixedDataset(Dataset):
    """The window's items (indices 0..n-1), then a BatchExtension's (n + j → item j, its id replaced by -(j + 1))."""

    def __init__(self, base: Dataset, extra: Dataset):
        self.base, self.extra, self.n = base, extra, len(base)
        self.features_in = bool(getattr(base, "features_in", False))

    def __len__(self) -> int:
        return self.n + len(self.extra)

    def _mark(self, item: tuple, j: int) -> tuple:
        return (item[0], item[1], -(j + 1), *item[3:])

    def __getitem__(self, i: int) -> tuple:
        return self.base[i] if i < self.n else self._mark(self.extra[i - self.n], i - self.n)

    def __getitems__(self, idx: list[int]) -> list[tuple]:
        """One batched read per part (cached arrays read a batch at once), items back in the order asked."""
        own = [i for i in idx if i < self.n]
        other = [i - self.n for i in idx if i >= self.n]
        got_own = iter(_items(self.base, own))
        got_other = iter(self._mark(item, j) for item, j in zip(_items(self.extra, other), other, strict=True))
        return [next(got_own) if i < self.n else next(got_other) for i in idx]


def _items(ds: Dataset, idx: list[int]) -> list:
    if not idx:
        return []
    many = getattr(ds, "__getitems__", None)
    return list(many(idx)) if many is not None else [ds[i] for i in idx]


class StrategyHooks(WindowHook):
    """One run's strategy and the state files that carry it across windows and restarts."""

    def __init__(self, cfg: ConfigLike, manifest, device: torch.device, workers: Callable[[Dataset], int],
                 say: Callable[[str], None] = print, writer: bool = True):
        rc = run_config(cfg)
        self.strategy: Strategy = create_strategy({"name": rc.cl_strategy.name, **thawed(rc.cl_strategy.params)})
        self.seed, self.say, self.writer = rc.seed, say, writer
        self.manifest, self.device, self.workers = manifest, device, workers
        self._samples: dict[int, Any] | None = None
        self.extension: BatchExtension | None = None
        self.current: WindowContext | None = None

    @property
    def describe(self) -> dict[str, Any]:
        return self.strategy.describe()

    @property
    def has_state(self) -> bool:
        """Whether the strategy keeps state (overrides state_dict): then a state file follows every window."""
        return type(self.strategy).state_dict is not Strategy.state_dict

    @property
    def step_strategy(self) -> Strategy | None:
        """The strategy the training step must consult, or None (naive: the plain step, bit for bit)."""
        return self.strategy if self.strategy.changes_loss else None

    # ------------------------------------------------------------------ per window
    def window(self, k: int, n_windows: int, detector, ids: list[int], ds: Dataset,
               make_dataset: Callable[[list[int]], Dataset], factor: int, batch_size: int) -> WindowContext:
        """What the strategy sees of window k (its training images and dataset, the detector, the device)."""
        if self._samples is None:
            self._samples = {s.id: s for s in self.manifest.split("train")}
        self.current = WindowContext(k=k, n_windows=n_windows, seed=self.seed, detector=detector, sample_ids=list(ids),
                                     samples=self._samples, dataset=ds, factor=factor, make_dataset=make_dataset,
                                     batch_size=batch_size, device=self.device, workers=self.workers, say=self.say)
        return self.current

    def before_training(self, w: WindowState) -> None:
        """Run the strategy's hook; set the dataset to train on and the function that extends each global batch."""
        window = w.context
        self.strategy.before_training(window)
        self.extension = self.strategy.training_batches(window)
        if self.extension is None:
            w.train_dataset, w.extend = window.dataset, None
            return
        n, ext = len(window.dataset), self.extension
        w.train_dataset = MixedDataset(window.dataset, ext.dataset)
        w.extend = lambda i, batch: batch + [n + j for j in ext.indices(i, len(batch))]

    @property
    def train_state_extra(self) -> Callable[[], dict[str, Any]] | None:
        """What to add to the window's resumable train state: the strategy's state (None: a stateless strategy)."""
        if not self.has_state:
            return None
        return lambda: {"strategy": {"name": self.strategy.name, "state": self.strategy.state_dict()}}

    def restore_in_window(self, saved: Mapping[str, Any] | None) -> None:
        """Restore the state saved with a train state (after `before_training` re-ran for the same window)."""
        if saved is None:
            return
        if saved.get("name") != self.strategy.name:
            raise RuntimeError(f"the train state holds the state of strategy {saved.get('name')!r}, this run uses "
                               f"{self.strategy.name!r}")
        self.strategy.load_state_dict(saved["state"])

    def after_training(self, w: WindowState) -> None:
        """Run the strategy's hook, then write the state the next window starts from (before the checkpoint)."""
        self.strategy.after_training(w.context)
        self.save_state(w)

    def save_state(self, w: WindowState) -> None:
        """window_<k>/strategy_state.pt (writing process, stateful strategies only); then `file_written`."""
        wdir, identity = w.wdir, w.identity
        if self.writer and self.has_state:
            state = self.strategy.state_dict()
            wdir.mkdir(parents=True, exist_ok=True)
            doc = {"format": STATE_FORMAT, "identity": identity, "strategy": self.describe, "state": state,
                   "saved": dt.datetime.now().isoformat(timespec="seconds")}
            with atomic_path(wdir / STATE_FILE) as tmp:
                torch.save(doc, tmp)
            w.notify("strategy_state")  # state written, the window's checkpoint not yet

    def on_window_end(self, w: WindowState) -> None:
        """The strategy's `after_scoring` (window k's predictions are written), in every process."""
        if self.current is not None and self.current.k == w.k:
            self.strategy.after_scoring(self.current)

    def restore_after(self, wdir: Path, identity: dict) -> None:
        """Load the state saved after the finished window in ``wdir`` (nothing to load for stateless strategies)."""
        if not self.has_state:
            return
        path = Path(wdir) / STATE_FILE
        if not path.is_file():
            raise RuntimeError(f"{path} is missing: strategy {self.strategy.name!r} cannot continue after that "
                               "window without it; delete that window's 'done' and checkpoint files to recompute it")
        doc = torch.load(path, map_location="cpu", weights_only=True)
        diff = [f"{k}: saved {doc.get('identity', {}).get(k)!r}, now {v!r}" for k, v in identity.items()
                if doc.get("identity", {}).get(k) != v]
        if doc.get("format") != STATE_FORMAT or diff or doc.get("strategy") != self.describe:
            raise RuntimeError(f"{path} does not belong to this run ({'; '.join(diff) or 'strategy or format'}); "
                               "delete that window's 'done' and checkpoint files to recompute it")
        self.strategy.load_state_dict(doc["state"])


def step_terms(strategy: Strategy, step: TrainStep) -> dict[str, torch.Tensor]:
    """The loss terms of a step: "base" (the plain loss unless the strategy replaces it) and the strategy's own."""
    terms = dict(strategy.training_loss(step))
    return {"base": terms.pop("base", step.loss), **terms}
