"""The engine's window hooks: call order, metrics merging, file notifications, the crash-injection hook's points and
indices, and the scoring loop's per-batch callbacks."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest
import torch

from protocols import faults
from protocols.window_hooks import WindowHook, WindowHooks


class Recorder(WindowHook):
    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def before_training(self, w):
        self.calls.append((self.name, "before_training", w.k))

    def after_training(self, w):
        self.calls.append((self.name, "after_training", w.k))

    def after_scoring(self, w):
        self.calls.append((self.name, "after_scoring", w.k))
        return {self.name: w.k, "shared": self.name}

    def before_done(self, w):
        self.calls.append((self.name, "before_done", w.k))

    def on_window_end(self, w):
        self.calls.append((self.name, "on_window_end", w.k))

    def file_written(self, w, what, index):
        self.calls.append((self.name, what, index))


def test_hooks_run_in_registration_order_and_merge_their_metrics(tmp_path):
    calls: list = []
    hooks = WindowHooks([Recorder("a", calls), None, Recorder("b", calls)])  # None: a hook not wanted by this run
    w = hooks.state(3, 5, tmp_path, detector=None)
    hooks.before_training(w)
    hooks.after_training(w)
    metrics = hooks.after_scoring(w)
    hooks.before_done(w)
    hooks.on_window_end(w)
    w.notify("test_dataset", 2)
    assert metrics == {"a": 3, "b": 3, "shared": "b"}  # a later hook's entry wins, as dict |= does
    assert calls == [(n, point, 3) for point in ("before_training", "after_training", "after_scoring", "before_done",
                                                   "on_window_end") for n in "ab"] + [("a", "test_dataset", 2),
                                                                                      ("b", "test_dataset", 2)]
    assert WindowHooks().after_scoring(w) == {} and WindowHooks().fit_callbacks(w) == []


def test_fault_hook_is_attached_only_when_the_variable_is_set(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    assert faults.fault_hook() is None
    monkeypatch.setenv(faults.ENV, "before_done:1")
    assert isinstance(faults.fault_hook(), faults.FaultInjection)


@pytest.fixture
def kills(monkeypatch):
    """The signals the crash injection would send (recorded instead of sent)."""
    sent: list = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, sig: sent.append(sig))
    return sent


def test_fault_points_and_indices_are_those_of_the_variable(monkeypatch, kills, tmp_path):
    monkeypatch.setenv(faults.ENV, "train_batch:1:7:USR1,predict_batch:1:3,strategy_state:1,test_dataset:1:2,"
                                   "before_done:2,train_state_tmp:1:4")
    hooks = WindowHooks([faults.FaultInjection()])
    w = hooks.state(1, 3, tmp_path, detector=None)
    assert hooks.fit_callbacks(w) == []  # train_batch is notified by the train-state saver (next test)
    w.notify("train_batch", 6)
    assert kills == []
    w.notify("train_batch", 7)
    assert kills == [signal.SIGUSR1]
    (predict_cb,) = hooks.scoring_callbacks(w)
    for i in range(4):
        predict_cb.on_predict_batch_start(None, None, None, i)
    assert kills[1:] == [signal.SIGKILL]  # before batch index 2: two batches done, the third starting
    kills.clear()
    w.notify("strategy_state")
    w.notify("test_dataset", 1)
    w.notify("test_dataset", 2)
    w.notify("train_state_tmp", 4)
    hooks.before_done(w)  # before_done names window 2, not 1
    assert kills == [signal.SIGKILL] * 3


def test_the_saver_notifies_each_batch_before_it_checks_for_a_stop(monkeypatch, tmp_path):
    """A process stopped at the train_batch crash point and then sent SIGTERM must save at that batch: the
    notification comes before the saver's stop check, and the batch index counts the resumed batches."""
    from protocols import resume

    events: list = []
    monkeypatch.setattr(resume, "stop_requested", lambda: events.append("stop?") or False)
    saver = resume.WindowCheckpointer(tmp_path / "state.pt", {"window": 1}, 0, 5, 19, None, True,
                                      notify=lambda what, i: events.append((what, i)))
    trainer = type("T", (), {"world_size": 1})()
    saver.on_train_batch_end(trainer, None, torch.tensor(0.5), (torch.zeros(2), torch.zeros(2)), 1)
    assert events == [("train_batch", 7), "stop?"]


def test_scoring_loop_runs_the_callbacks_before_every_batch():
    from protocols.module import DetectorModule
    from protocols.scoring import score_batches

    class Tiny(torch.nn.Module):
        meta = SimpleNamespace(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), name="tiny", input_kind="image")

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x.mean(dim=(1, 2, 3)) * self.w

    seen: list = []

    class Probe:
        def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            seen.append((batch_idx, int(batch[1][0])))

    batches = [[torch.full((2, 3, 4, 4), i, dtype=torch.uint8), torch.tensor([2 * i, 2 * i + 1])] for i in range(3)]
    out = score_batches(DetectorModule(Tiny(), {}, 1), batches, "32-true", torch.device("cpu"), callbacks=[Probe()])
    assert seen == [(0, 0), (1, 2), (2, 4)] and len(out) == 3


def test_the_engine_registers_the_strategy_first_and_crash_injection_last(monkeypatch):
    from protocols.config_model import resolve_run_config
    from protocols.engine import window_hooks

    rc = resolve_run_config("smoke")  # eval.threshold eer
    strategy = WindowHook()
    ctx = SimpleNamespace(strategy=strategy, tests=None, validation=None)
    plain = SimpleNamespace(meta=SimpleNamespace(has_localization=False))
    monkeypatch.delenv(faults.ENV, raising=False)
    assert window_hooks(rc, None, plain, ctx).hooks == [strategy]
    monkeypatch.setenv(faults.ENV, "before_done:0")
    maps = SimpleNamespace(meta=SimpleNamespace(has_localization=True))
    bench = SimpleNamespace(manifest=None, plan=None)
    names = [type(h).__name__ for h in window_hooks(rc, bench, maps, ctx).hooks]
    assert names == ["WindowHook", "WindowLocalization", "FaultInjection"]
