"""Continual-learning strategies: each core computation against Avalanche's own numbers or a hand computation,
the registry and config section, the replay memory's distribution, and the batch plumbing.

Avalanche values: avalanche-lib 0.6.0 run beside the pinned torch on the literal toy model and data below
(EWCPlugin.compute_importances / update_importances(mode="online"), MASPlugin.after_training_exp,
LearningWithoutForgetting._distillation_loss, ClassBalancedBuffer.get_group_lengths); the script that made them
is described in docs/strategies.md ("How the built-ins were checked").
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from protocols.config import ConfigError, merge, resolve_config
from protocols.strategies import create_strategy, list_strategies, resolve_strategy_config
from protocols.strategies.base import TrainStep, WindowContext
from protocols.strategies.hooks import MixedDataset, step_terms
from protocols.strategies.lwf import distillation_bce
from protocols.strategies.regularizers import importance
from protocols.strategies.replay import GroupReservoir, balanced_capacities, draw_memory, reservoir_keys

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------- toy model and data
W1 = [[0.5, -0.3, 0.8], [-0.6, 0.2, 0.4]]
B1 = [0.1, -0.2]
W2 = [[0.7, -1.1]]
B2 = [0.05]
X = [[1.0, 0.5, -0.5], [0.2, -1.0, 0.3], [-0.7, 0.4, 1.2], [0.9, 0.9, 0.1], [-0.3, -0.8, -0.6]]
Y = [1.0, 0.0, 1.0, 0.0, 1.0]
X2 = [[0.3, -0.2, 0.9], [-1.0, 0.6, 0.2], [0.4, 0.4, -1.1]]
Y2 = [0.0, 1.0, 1.0]

AVALANCHE = {  # batch size 2
    "fisher_window0": {
        "l1.weight": [[0.032770004123449326, 0.035904526710510254, 0.019940564408898354],
                      [0.05593329668045044, 0.0927852988243103, 0.03720427677035332]],
        "l1.bias": [0.027740923687815666, 0.07869631052017212],
        "l2.weight": [[0.020883610472083092, 0.05144209787249565]], "l2.bias": [0.07688236981630325]},
    "fisher_online_gamma0.7": {  # 0.7 * F(X, Y) + F(X2, Y2), same weights
        "l1.weight": [[0.05260854214429855, 0.0377860926091671, 0.03508687764406204],
                      [0.11643554270267487, 0.09772326052188873, 0.10141138732433319]],
        "l1.bias": [0.04242900386452675, 0.09111835062503815],
        "l2.weight": [[0.12263406813144684, 0.09459365904331207]], "l2.bias": [0.13867709040641785]},
    "mas_window0": {
        "l1.weight": [[0.4520752429962158, 0.25702473521232605, 0.180705726146698],
                      [0.5183044075965881, 0.5330644249916077, 0.16664062440395355]],
        "l1.bias": [0.5734981894493103, 0.7881693243980408],
        "l2.weight": [[0.3009706735610962, 0.5947112441062927]], "l2.bias": [0.9598572254180908]},
    "mas_blend_alpha0.5": {  # 0.5 * Omega(X) + 0.5 * Omega(X2)
        "l1.weight": [[0.39232903718948364, 0.24191372096538544, 0.19509392976760864],
                      [0.5173572897911072, 0.4426415264606476, 0.3343453109264374]],
        "l1.bias": [0.44067174196243286, 0.5239911079406738],
        "l2.weight": [[0.46695464849472046, 0.5357743501663208]], "l2.bias": [0.6988573670387268]},
    "lwf_kl_T2": 0.04264231026172638,
    "lwf_kl_T3": 0.020182959735393524,
    "balanced_lengths_10": {1: [10], 3: [4, 3, 3], 4: [3, 3, 2, 2], 7: [2, 2, 2, 1, 1, 1, 1]},
    "balanced_lengths_500": {6: [84, 84, 83, 83, 83, 83], 9: [56] * 5 + [55] * 4, 26: [20] * 6 + [19] * 20},
}


class Toy(torch.nn.Module):
    """logit = w2 . tanh(W1 x + b1) + b2; `logits(x, detector)` is the contract WindowContext relies on."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2 = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)
        with torch.no_grad():
            for t, v in ((self.l1.weight, W1), (self.l1.bias, B1), (self.l2.weight, W2), (self.l2.bias, B2)):
                t.copy_(torch.tensor(v))

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x))).squeeze(1)

    def logits(self, x, detector=None):
        return (detector or self)(x)


def toy_window(model: Toy, x, y, k: int = 0) -> WindowContext:
    ds = TensorDataset(torch.tensor(x), torch.tensor(y), torch.arange(len(y)))
    return WindowContext(k=k, n_windows=3, seed=0, detector=model, sample_ids=list(range(len(y))), samples={},
                         dataset=ds, factor=1, make_dataset=None, batch_size=2, device=torch.device("cpu"),
                         workers=lambda ds: 0, say=lambda m: None, module=model)


def assert_close_to(got: dict[str, torch.Tensor], expected: dict[str, list]) -> None:
    assert set(got) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], torch.tensor(value), rtol=1e-5, atol=1e-7, msg=name)


def toy_step(logits, y, ids, forward=None, loss=None) -> TrainStep:
    logits, y = torch.tensor(logits), torch.tensor(y)
    return TrainStep(x=torch.zeros(len(y), 3), y=y, ids=torch.tensor(ids), logits=logits,
                     loss=F.binary_cross_entropy_with_logits(logits, y) if loss is None else loss, window=1,
                     forward=forward)


# ------------------------------------------------------------------------------------------------------- EWC
def test_fisher_diagonal_by_hand_for_a_linear_model():
    """Batch size 1: F = mean_i ((sigmoid(z_i) - y_i) x_i)^2 for logit z = w.x + b."""

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)
            with torch.no_grad():
                self.lin.weight.copy_(torch.tensor([[0.5, -1.0]]))
                self.lin.bias.fill_(0.25)

        def logits(self, x, detector=None):
            return self.lin(x).squeeze(1)

    x = [[1.0, 2.0], [-1.0, 0.5]]
    y = [1.0, 0.0]
    model = Linear()
    window = toy_window(model, x, y)
    window.batch_size = 1
    fisher = importance(window, "fisher")
    g = []
    for (a, b), t in zip(x, y, strict=True):
        r = 1 / (1 + math.exp(-(0.5 * a - 1.0 * b + 0.25))) - t
        g.append((r * a, r * b, r))
    expected_w = [[(g[0][0] ** 2 + g[1][0] ** 2) / 2, (g[0][1] ** 2 + g[1][1] ** 2) / 2]]
    torch.testing.assert_close(fisher["lin.weight"], torch.tensor(expected_w))
    torch.testing.assert_close(fisher["lin.bias"], torch.tensor([(g[0][2] ** 2 + g[1][2] ** 2) / 2]))


def test_ewc_fisher_and_online_accumulation_match_avalanche():
    model = Toy()
    ewc = create_strategy({"name": "ewc", "lambda": 2.0, "gamma": 0.7})
    ewc.after_training(toy_window(model, X, Y))
    assert_close_to(ewc.importance, AVALANCHE["fisher_window0"])
    ewc.after_training(toy_window(model, X2, Y2, k=1))
    assert_close_to(ewc.importance, AVALANCHE["fisher_online_gamma0.7"])


def test_ewc_penalty_is_lambda_fisher_weighted_squared_distance_and_restores_exactly():
    model = Toy()
    ewc = create_strategy({"name": "ewc", "lambda": 2.0, "gamma": 0.7})
    window = toy_window(model, X, Y)
    ewc.before_training(window)
    assert ewc.training_loss(toy_step([0.0], [1.0], [0])) == {}  # window 0: nothing to hold yet
    ewc.after_training(window)
    with torch.no_grad():
        model.l1.weight[0, 1] += 0.5
        model.l2.bias -= 0.25
    ewc.before_training(toy_window(model, X2, Y2, k=1))
    f = AVALANCHE["fisher_window0"]
    expected = 2.0 * (f["l1.weight"][0][1] * 0.5 ** 2 + f["l2.bias"][0] * 0.25 ** 2)
    got = ewc.training_loss(toy_step([0.0], [1.0], [0]))["ewc"]
    assert got.item() == pytest.approx(expected, rel=1e-5)
    got.backward()  # the penalty's gradient reaches the parameters: 2 * lambda * F * delta
    assert model.l1.weight.grad[0, 1].item() == pytest.approx(2 * 2.0 * f["l1.weight"][0][1] * 0.5, rel=1e-5)
    again = create_strategy({"name": "ewc", "lambda": 2.0, "gamma": 0.7})
    again.load_state_dict(ewc.state_dict())
    again.before_training(toy_window(model, X2, Y2, k=1))
    assert again.training_loss(toy_step([0.0], [1.0], [0]))["ewc"].item() == got.item()


# ------------------------------------------------------------------------------------------------------- MAS
def test_mas_importance_and_blend_match_avalanche():
    model = Toy()
    mas = create_strategy({"name": "mas", "lambda": 1.0, "alpha": 0.5})
    mas.after_training(toy_window(model, X, Y))
    assert_close_to(mas.importance, AVALANCHE["mas_window0"])
    mas.after_training(toy_window(model, X2, Y2, k=1))
    assert_close_to(mas.importance, AVALANCHE["mas_blend_alpha0.5"])
    assert all(m.training for m in model.modules())  # the pass put every module back in its former mode


# ------------------------------------------------------------------------------------------------------- LwF
def test_lwf_distillation_is_avalanches_kl_plus_the_teachers_entropy():
    student = torch.tensor([0.3, -1.2, 2.5, 0.0])
    teacher = torch.tensor([1.0, -0.4, 1.5, -2.0])
    for t, kl in ((2.0, AVALANCHE["lwf_kl_T2"]), (3.0, AVALANCHE["lwf_kl_T3"])):
        q = torch.sigmoid(teacher / t)
        entropy = -(q * q.log() + (1 - q) * (1 - q).log())
        got = distillation_bce(student, teacher, t)
        assert (got - entropy).mean().item() == pytest.approx(kl, rel=1e-5)
    p, q = 1 / (1 + math.exp(-0.15)), 1 / (1 + math.exp(-0.5))  # row 0 by hand at T = 2
    assert distillation_bce(student, teacher, 2.0)[0].item() == pytest.approx(
        -(q * math.log(p) + (1 - q) * math.log(1 - p)), rel=1e-6)


def test_lwf_snapshots_the_previous_window_and_weights_the_term_by_alpha():
    model = Toy()
    lwf = create_strategy({"name": "lwf", "alpha": 0.5, "temperature": 2.0})
    lwf.before_training(toy_window(model, X, Y, k=0))
    assert lwf.teacher is None
    lwf.before_training(toy_window(model, X, Y, k=1))
    with torch.no_grad():
        model.l2.bias += 1.0  # the student moves on; the teacher keeps window 0's weights
    x = torch.tensor(X)
    step = toy_step(model(x).detach().tolist(), Y, list(range(5)), forward=lambda xx, det: det(xx))
    step.x = x
    expected = 0.5 * distillation_bce(model(x), Toy()(x), 2.0).mean()
    assert lwf.training_loss(step)["lwf"].item() == pytest.approx(expected.item(), rel=1e-6)


# ----------------------------------------------------------------------------------------------- replay memory
def _splitmix64(x: int) -> int:
    m = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_reservoir_keys_are_splitmix64_of_seed_and_id():
    seed, ids = 12345, [0, 1, 7, 99_999]
    mixed = [(i ^ ((seed * 0x9E3779B97F4A7C15) & ((1 << 64) - 1)) ^ 0x5EED_2E5E_7701) for i in ids]
    expected = [(_splitmix64(v) >> 11) / float(1 << 53) for v in mixed]
    assert reservoir_keys(seed, ids).tolist() == expected
    assert reservoir_keys(seed, [7]).tolist() == [expected[2]]  # a key depends on nothing but (seed, id)


def test_group_capacities_match_avalanche_and_fill_unused_shares():
    for total, table in ((10, AVALANCHE["balanced_lengths_10"]), (500, AVALANCHE["balanced_lengths_500"])):
        for n, lengths in table.items():
            assert balanced_capacities(total, [10_000] * n) == lengths
    assert balanced_capacities(10, [1, 5, 5]) == [1, 5, 4]  # a small group keeps all, the rest is split again
    assert balanced_capacities(10, [2, 2, 2]) == [2, 2, 2]  # fewer items than slots: everything
    assert balanced_capacities(7, [0, 9, 9]) == [0, 4, 3]


def test_memory_keeps_the_top_keys_per_group_with_half_for_the_reals():
    mem = GroupReservoir(size=20, seed=3, real_share=0.5)
    reals, fakes_a, fakes_b = list(range(0, 30)), list(range(100, 110)), list(range(200, 210))
    entered = mem.offer(reals + fakes_a, ["real"] * 30 + ["fake:A"] * 10)
    assert mem.capacities() == {"real": 10, "fake:A": 10}
    assert mem.groups == ["real", "fake:A"] and len(mem) == 20 and sorted(entered) == sorted(mem.ids)

    def top(ids, n):
        keys = reservoir_keys(3, ids)
        return [ids[j] for j in np.argsort(-keys, kind="stable")[:n]]

    assert mem.kept["real"] == top(reals, 10) and mem.kept["fake:A"] == top(fakes_a, 10)
    mem.offer(fakes_b + reals[:5], ["fake:B"] * 10 + ["real"] * 5)  # reals offered again change nothing
    assert mem.capacities() == {"real": 10, "fake:A": 5, "fake:B": 5}
    assert mem.kept["fake:A"] == top(fakes_a, 5) and mem.kept["fake:B"] == top(fakes_b, 5)
    assert mem.kept["real"] == top(reals, 10) and mem.seen["real"] == 30
    restored = GroupReservoir(0, 0)
    restored.load_state_dict(mem.state_dict())
    assert restored.ids == mem.ids and restored.capacities() == mem.capacities()


def test_reservoir_distribution_is_uniform_within_each_group():
    """Over 4000 seeds, every image of a group is kept with probability capacity / images offered (three windows,
    groups shrinking as new generators arrive); checked per image within 5 standard errors, and the memory is
    always full and balanced."""
    n_runs = 4000
    windows = [(list(range(0, 12)), list(range(100, 108))), (list(range(12, 20)), list(range(200, 206))),
               (list(range(20, 32)), list(range(300, 304)))]
    counts: dict[int, int] = {}
    for seed in range(n_runs):
        mem = GroupReservoir(size=12, seed=seed, real_share=0.5)
        for w, (reals, fakes) in enumerate(windows):
            mem.offer(reals + fakes, ["real"] * len(reals) + [f"fake:{w}"] * len(fakes))
        assert len(mem) == 12
        for i in mem.ids:
            counts[i] = counts.get(i, 0) + 1
    # final capacities: reals 6 of 32; fakes 6 over groups of 8, 6, 4 images -> 2 each
    expected = {**{i: 6 / 32 for i in range(32)}, **{i: 2 / 8 for i in range(100, 108)},
                **{i: 2 / 6 for i in range(200, 206)}, **{i: 2 / 4 for i in range(300, 304)}}
    for i, p in expected.items():
        freq = counts.get(i, 0) / n_runs
        assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / n_runs), (i, freq, p)


def test_memory_draws_are_seeded_per_batch_without_replacement():
    a = draw_memory(seed=1, k=2, batch=5, n_new=8, ratio=1.0, n_images=20, factor=4)
    assert a == draw_memory(seed=1, k=2, batch=5, n_new=8, ratio=1.0, n_images=20, factor=4)
    assert a != draw_memory(seed=1, k=2, batch=6, n_new=8, ratio=1.0, n_images=20, factor=4)
    assert len(a) == 8 and len({i // 4 for i in a}) == 8 and all(0 <= i < 80 for i in a)
    assert len(draw_memory(1, 2, 5, n_new=8, ratio=0.5, n_images=20, factor=4)) == 4
    assert len(draw_memory(1, 2, 5, n_new=8, ratio=2.0, n_images=3, factor=1)) == 16  # small memory: with replacement


def test_mixed_dataset_marks_memory_rows_and_keeps_order():
    base = [(torch.tensor([i]), torch.tensor(0.0), 10 + i) for i in range(3)]
    extra = [(torch.tensor([100 + j]), torch.tensor(1.0), 50 + j) for j in range(4)]
    ds = MixedDataset(base, extra)
    items = ds.__getitems__([1, 5, 0, 3])
    assert [int(it[0]) for it in items] == [1, 102, 0, 100]
    assert [it[2] for it in items] == [11, -3, 10, -1]  # memory item j gets id -(j + 1)
    step = toy_step([0.0] * 4, [0.0, 1.0, 0.0, 1.0], [11, -3, 10, -1])
    assert step.from_memory.tolist() == [False, True, False, True] and step.memory_index[[1, 3]].tolist() == [2, 0]


def test_der_plus_plus_terms_by_hand():
    der = create_strategy({"name": "der++", "alpha": 0.3, "beta": 0.5})
    der.window_ids = [7, 9]
    der._window_logits = torch.tensor([0.1, 0.2, 0.3, -0.4, -0.5, 0.6])  # 2 images x factor 3, image-major
    logits, y = [1.0, -0.5, 2.0, 0.25], [1.0, 0.0, 1.0, 0.0]
    step = toy_step(logits, y, [4, -5, 8, -1])  # rows 1 and 3 from memory items 4 and 0
    terms = step_terms(der, step)
    bce = F.binary_cross_entropy_with_logits(torch.tensor(logits), torch.tensor(y), reduction="none")
    assert terms["base"].item() == pytest.approx((bce[0] + bce[2]).item() / 2)
    assert terms["der_logits"].item() == pytest.approx(0.3 * ((-0.5 + 0.5) ** 2 + (0.25 - 0.1) ** 2) / 2)
    assert terms["der_labels"].item() == pytest.approx(0.5 * (bce[1] + bce[3]).item() / 2)


def test_plain_step_terms_keep_the_base_loss():
    ewc = create_strategy("ewc")
    step = toy_step([0.5], [1.0], [3])
    assert step_terms(ewc, step) == {"base": step.loss}  # no importance yet: nothing added
    assert not create_strategy("naive").changes_loss and not create_strategy("replay").changes_loss
    assert create_strategy("ewc").changes_loss and create_strategy("lwf").changes_loss


# -------------------------------------------------------------------------------------------- registry, config
def test_every_builtin_runs_with_documented_defaults_by_name_alone():
    assert {"naive", "replay", "ewc", "mas", "lwf", "der++"} <= set(list_strategies())
    assert resolve_strategy_config("ewc") == {"name": "ewc", "gamma": 1.0, "lambda": 100.0}
    assert resolve_strategy_config("lwf") == {"name": "lwf", "alpha": 1.0, "temperature": 2.0}
    assert resolve_strategy_config("replay") == {"name": "replay", "memory_size": 500, "ratio": 1.0,
                                                 "real_share": 0.5}
    assert resolve_strategy_config(None) == {"name": "naive"}
    for name in list_strategies():
        s = create_strategy(name)
        assert s.name == name and s.describe() == resolve_strategy_config(name)


def test_strategy_config_errors_name_the_key_and_the_closest():
    with pytest.raises(ConfigError, match="closest: ewc"):
        resolve_strategy_config("ewk")
    with pytest.raises(ConfigError, match="did you mean 'lambda'"):
        resolve_strategy_config({"name": "ewc", "lamda": 3})
    with pytest.raises(ConfigError, match="expected a number"):
        resolve_strategy_config({"name": "ewc", "lambda": "big"})
    with pytest.raises(ConfigError, match="expected an integer"):
        resolve_strategy_config({"name": "replay", "memory_size": 2.5})
    assert resolve_strategy_config({"name": "ewc", "lambda": 3})["lambda"] == 3.0  # ints are numbers


def test_config_section_merges_parameters_and_a_new_name_starts_from_its_defaults():
    base = {"cl_strategy": {"name": "naive"}, "seed": 0}
    cfg = merge(base, {"cl_strategy": {"name": "ewc", "lambda": 5}}, "test")
    assert cfg["cl_strategy"] == {"name": "ewc", "lambda": 5}
    cfg = merge(cfg, {"cl_strategy": {"gamma": 0.9}}, "test")
    assert cfg["cl_strategy"] == {"name": "ewc", "lambda": 5, "gamma": 0.9}
    assert merge(cfg, {"cl_strategy": "lwf"}, "test")["cl_strategy"] == {"name": "lwf"}
    assert resolve_config("smoke")["cl_strategy"] == {"name": "naive"}
    assert resolve_config("smoke")["strategy"] == "auto"  # Lightning's distributed strategy stays apart


def test_cli_resolves_the_strategy_and_a_typo_fails_fast(tmp_path, capsys):
    from protocols.cli import main

    assert main(["run", "--preset", "smoke", "--cl-strategy", "ewc", "--set", "cl_strategy.gamma=0.5",
                 "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "cl_strategy:\n  name: ewc\n  gamma: 0.5\n  lambda: 100.0" in out
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "protocols", "run", "--preset", "smoke", "--cl-strategy", "lwf",
                           "--set", "cl_strategy.temprature=3", "--runs-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "did you mean 'temperature'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and time.perf_counter() - t0 < 30
    assert not (tmp_path / "exp").exists()


def test_strategies_list_shows_defaults(capsys):
    from protocols.cli import main

    assert main(["strategies", "list", "--format", "json"]) == 0
    import json

    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["ewc"]["defaults"] == {"lambda": 100.0, "gamma": 1.0} and rows["ewc"]["source"] == "builtin"
    assert rows["naive"]["defaults"] == {}


def test_memory_draws_over_samples_with_unequal_item_counts():
    """Video samples have their own numbers of items (segments, frames): a draw picks a sample, then one of its
    items; samples without items are never drawn; equal counts draw exactly as `factor` copies do."""
    counts = np.array([3, 0, 1, 5, 2])
    starts = np.cumsum(counts) - counts
    seen = set()
    for b in range(200):
        for i in draw_memory(seed=3, k=1, batch=b, n_new=4, ratio=1.0, n_images=5, factor=1, counts=counts):
            slot = int(np.searchsorted(starts, i, side="right") - 1)
            assert counts[slot] > 0 and starts[slot] <= i < starts[slot] + counts[slot]
            seen.add(i)
    assert seen == set(range(int(counts.sum())))  # every item of every sample with items is reachable
    one = draw_memory(seed=3, k=1, batch=0, n_new=4, ratio=1.0, n_images=5, factor=1, counts=counts)
    assert len({int(np.searchsorted(starts, i, side="right") - 1) for i in one}) == 4  # 4 samples have items
    same = dict(seed=1, k=2, batch=5, n_new=8, ratio=1.0, n_images=20, factor=4)
    assert draw_memory(**same, counts=np.full(20, 4)) == draw_memory(**same)
    assert draw_memory(seed=1, k=0, batch=0, n_new=4, ratio=1.0, n_images=2, factor=1, counts=[0, 0]) == []


def test_item_counts_follow_the_dataset_and_refuse_a_mismatch():
    from benchmark.sequences import get_profile
    from protocols.frame_inputs import FrameArray
    from protocols.sequence_inputs import SegmentDataset
    from protocols.strategies.base import item_counts

    profile = get_profile("fixed", None, 4)
    frames = [np.zeros((t, 68, 2), np.float32) for t in (9, 3, 4)]  # 2 segments, none, 1 segment
    seg = SegmentDataset(frames, [1, 0, 1], [7, 8, 9], profile, train=True)
    assert item_counts(seg, 3, 5).tolist() == [2, 0, 1] and len(seg) == 3
    arr = FrameArray(np.zeros((5, 3, 4, 4), np.uint8), np.array([0, 0, 1, 1, 1]), labels=[0, 1], ids=[4, 6],
                     per_sample=[2, 3])
    assert item_counts(arr, 2, 1).tolist() == [2, 3]
    assert item_counts(TensorDataset(torch.zeros(6, 1)), 3, 2).tolist() == [2, 2, 2]
    with pytest.raises(RuntimeError, match="6 items do not split into 4 samples"):
        item_counts(TensorDataset(torch.zeros(6, 1)), 4, 2)
    with pytest.raises(RuntimeError, match="training sets only"):
        FrameArray(np.zeros((1, 3, 4, 4), np.uint8), np.array([0])).items_per_sample()


def test_first_copies_take_the_first_item_of_each_sample_with_items():
    data = TensorDataset(torch.arange(6.0))

    class Counted(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return data[i]

        def items_per_sample(self):
            return np.array([2, 0, 3, 1])

    ctx = WindowContext(k=1, n_windows=2, detector=torch.nn.Linear(1, 1), sample_ids=[1, 2, 3, 4], samples={},
                        dataset=Counted(), factor=1, make_dataset=lambda ids: Counted(), batch_size=2,
                        device=torch.device("cpu"), seed=0, workers=lambda ds: 0)
    assert [float(x[0]) for x in ctx.first_copies()] == [0.0, 2.0, 5.0]


def test_slurm_array_over_strategies_passes_each_as_cl_strategy():
    from protocols.slurm import parse_array, task_args

    combos = parse_array(["cl_strategy=naive,der++", "seed=0,1"])
    assert [task_args(c) for c in combos[:2]] == [["--cl-strategy", "naive", "--seed", "0"],
                                                  ["--cl-strategy", "naive", "--seed", "1"]]
    assert task_args(combos[3]) == ["--cl-strategy", "der++", "--seed", "1"]
    assert task_args({"cl_strategy.lambda": "5"}) == ["--set", "cl_strategy.lambda=5"]
