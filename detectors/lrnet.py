"""LRNet (Sun et al., CVPR 2021): landmark-sequence deepfake detectors `lrnet_g1`, `lrnet_g2` and `lrnet`.

One branch (`LRNetBranch`) is LRNet's PyTorch model: landmark dropout that zeroes whole (x, y) points (one
mask per batch, shared by every frame, scaled by 1/(1-p)), a one-layer bidirectional GRU of 32 units whose
initial hidden state is a learned parameter, then dropout 0.5, a residual feed-forward block (64 → 64 → 64 with
ReLU and dropout 0.5 inside), dropout 0.5 and a linear layer to two classes; LRNet applies a softmax to them.
Its state-dict keys are LRNet's own (`hidden_state`, `gru.*`, `dense.1.fn.net.{0,3}.*`, `dense.3.*`), so
LRNet's published `g1.pth`/`g2.pth` load strictly.

- `lrnet_g1` reads the landmark positions of a segment (L frames × 136),
- `lrnet_g2` the L-1 frame-to-frame differences inside the segment,
- `lrnet` both; a segment's score is the mean of the two branches' P(fake), as LRNet's evaluation mixes them.

The detector returns a logit per segment, log P(fake) − log P(real) of the mixed probability, so that
sigmoid(logit) is the score; for one branch this is z_fake − z_real of its two-way output, and genshift's BCE
on it equals LRNet's NLL on the softmax. `training_loss` trains every branch on its own NLL (LRNet trains g1 and
g2 separately), with per-branch epoch limits (`branch_epochs`).

Weights (`pretrained`): `none` (seeded random init), a directory holding LRNet's `g1.pth` and/or `g2.pth`
(each branch its file), a file in LRNet's key layout (one branch), or a genshift checkpoint of the same
detector (`g1.*`/`g2.*` keys). Files are read with torch.load(weights_only=True) or safetensors, strictly.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from .base import SequenceDetector
from .weights import (
    WEIGHT_SUFFIXES,
    WeightsMismatchError,
    WeightsUnavailableError,
    check_keys,
    load_state_dict_file,
)

FEATURE_SIZE = 136  # 68 landmarks × (x, y)
SEGMENT_LENGTH = 30  # LRNet's BLOCK_SIZE
BRANCHES = {"lrnet_g1": ("g1",), "lrnet_g2": ("g2",), "lrnet": ("g1", "g2")}
# LRNet's args_model.yaml
DEFAULTS = dict(feature_size=FEATURE_SIZE, lm_dropout_rate=0.1, rnn_unit=32, num_layers=1, rnn_dropout_rate=0.0,
                fc_dropout_rate=0.5, res_hidden=64)
WEIGHTS_URL = "https://github.com/frederickszk/LRNet/tree/main/training/weights/torch"
_BEST = "_best"


class LandmarkDropout(nn.Module):
    """Zero whole landmarks (both coordinates) with probability p during training; one mask per batch."""

    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"landmark dropout probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        points = x.shape[-1] // 2
        # LRNet draws one Bernoulli per landmark from the global generator (torch.Tensor([1 - p] * points)),
        # repeats it for x and y, and shares the mask across the batch and the frames.
        keep = torch.bernoulli(torch.full((points,), 1.0 - self.p)).repeat_interleave(2)
        return x * keep.to(x.device, x.dtype) * (1.0 / (1.0 - self.p))


class _Residual(nn.Module):
    """fn(x) + x; the attribute name `fn` keeps LRNet's key names (dense.1.fn.net.*)."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LRNetBranch(nn.Module):
    """One LRNet RNN: (N, T, 136) → (N, 2) class scores before the softmax (index 1 = fake)."""

    def __init__(self, feature_size: int = FEATURE_SIZE, lm_dropout_rate: float = 0.1, rnn_unit: int = 32,
                 num_layers: int = 1, rnn_dropout_rate: float = 0.0, fc_dropout_rate: float = 0.5,
                 res_hidden: int = 64) -> None:
        super().__init__()
        self.hidden_state = nn.Parameter(torch.randn(2 * num_layers, 1, rnn_unit))
        self.dropout_landmark = LandmarkDropout(lm_dropout_rate)
        self.gru = nn.GRU(input_size=feature_size, hidden_size=rnn_unit, num_layers=num_layers,
                          dropout=rnn_dropout_rate, batch_first=True, bidirectional=True)
        width = rnn_unit * 2 * num_layers
        self.dense = nn.Sequential(
            nn.Dropout(fc_dropout_rate),
            _Residual(_FeedForward(width, res_hidden, fc_dropout_rate)),
            nn.Dropout(fc_dropout_rate),
            nn.Linear(width, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout_landmark(x)
        _, hidden = self.gru(x, self.hidden_state.repeat(1, x.shape[0], 1).contiguous())
        return self.dense(torch.cat(list(hidden), dim=1))


def _log_p_fake_real(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log P(fake), log P(real) of a branch's two class scores under the softmax."""
    logp = torch.log_softmax(z.float(), dim=1)
    return logp[:, 1], logp[:, 0]


class LRNetDetector(SequenceDetector):
    """lrnet_g1 / lrnet_g2 / lrnet: one or two LRNet branches over packed segments (see SequenceDetector)."""

    def __init__(self, name: str, pretrained: str = "none", **model_args) -> None:
        if name not in BRANCHES:
            raise ValueError(f"unknown LRNet detector {name!r}; expected one of {sorted(BRANCHES)}")
        args = {**DEFAULTS, **model_args}
        super().__init__(name=name, family="lrnet", backbone_name="LRNet GRU-32 bidirectional",
                         segment_length=SEGMENT_LENGTH, feature_size=args["feature_size"], pretrained=pretrained)
        self.branch_names: tuple[str, ...] = BRANCHES[name]
        for b in self.branch_names:
            self.add_module(b, LRNetBranch(**args))
        # Per-branch training epochs (None = every epoch); set by the run from `train.branch_epochs`.
        self.branch_epochs: dict[str, int | None] = {b: None for b in self.branch_names}
        self.epoch = 0  # the training epoch in progress, set by the training loop's selection callback
        # Best-validation selection during a window (protocols/selection.py): branch -> {"acc", "epoch", "state"}.
        # It travels with the resumable train state (trainable_state_dict) and is empty in final checkpoints.
        self.selection_state: dict[str, dict] = {}
        self.selected: dict[str, dict] = {}
        self.finish_meta()

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Every weight, plus the best-so-far branch weights while a selection is in progress (`_best.*`)."""
        out = dict(self.state_dict())
        for b, best in self.selection_state.items():
            out[f"{_BEST}.{b}.acc"] = torch.tensor(float(best["acc"]), dtype=torch.float64)
            out[f"{_BEST}.{b}.epoch"] = torch.tensor(int(best["epoch"]), dtype=torch.int64)
            out.update({f"{_BEST}.{b}.state.{k}": v for k, v in best["state"].items()})
        return out

    def load_trainable_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Strict load of the weights; `_best.*` entries restore an in-progress selection."""
        weights = {k: v for k, v in state_dict.items() if not k.startswith(_BEST + ".")}
        best: dict[str, dict] = {}
        for k, v in state_dict.items():
            if not k.startswith(_BEST + "."):
                continue
            b, field, *rest = k[len(_BEST) + 1:].split(".", 2)
            entry = best.setdefault(b, {"state": {}})
            if field == "state":
                entry["state"][rest[0]] = v
            else:
                entry[field] = float(v) if field == "acc" else int(v)
        unknown = sorted(set(best) - set(self.branch_names))
        if unknown or any({"acc", "epoch"} - set(e) for e in best.values()):
            raise WeightsMismatchError(f"selection entries of {self.meta.name} are malformed or name unknown "
                                       f"branches {unknown}", [], sorted(k for k in state_dict if k.startswith(_BEST)),
                                       [])
        super().load_trainable_state_dict(weights)
        for b, entry in best.items():
            check_keys(getattr(self, b).state_dict(), entry["state"], "the train state's selection",
                       f"{self.meta.name} branch {b}")
        self.selection_state = best

    def branches(self) -> Iterator[tuple[str, LRNetBranch]]:
        for b in self.branch_names:
            yield b, getattr(self, b)

    def branch_inputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        pos, diff = self.split_packed(x)
        return {b: pos if b == "g1" else diff for b in self.branch_names}

    def branch_log_probs(self, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """branch → (log P(fake), log P(real)) per segment, in float32."""
        inputs = self.branch_inputs(x)
        return {b: _log_p_fake_real(m(inputs[b])) for b, m in self.branches()}

    def branch_scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """branch → P(fake) per segment (LRNet's softmax output [:, 1])."""
        out = {}
        inputs = self.branch_inputs(x)
        for b, m in self.branches():
            out[b] = torch.softmax(m(inputs[b]).float(), dim=1)[:, 1]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) logits of the segment score: one branch's z_fake − z_real, or logit((p_g1 + p_g2) / 2)."""
        if len(self.branch_names) == 1:
            lf, lr = next(iter(self.branch_log_probs(x).values()))
            return lf - lr
        probs = self.branch_log_probs(x)
        log_fake = torch.logsumexp(torch.stack([lf for lf, _ in probs.values()]), dim=0)
        log_real = torch.logsumexp(torch.stack([lr for _, lr in probs.values()]), dim=0)
        return log_fake - log_real  # the 1/2 of the mean cancels

    def active_branches(self) -> list[str]:
        """Branches still training in the current epoch (`branch_epochs`: g1 750, g2 400 in LRNet's recipe)."""
        return [b for b in self.branch_names
                if self.branch_epochs.get(b) is None or self.epoch < int(self.branch_epochs[b])]

    def training_loss(self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Sum over the active branches of LRNet's NLL on the softmax output (each branch its own loss).

        A finished branch is not run at all, so its parameters get no gradient and Adam leaves them alone.
        ``weights`` (w_real, w_fake) weight each segment's NLL by its class (mean over the batch).
        """
        inputs = self.branch_inputs(x)
        target = y.long()
        losses = []
        for b in self.active_branches():
            lf, lr = _log_p_fake_real(getattr(self, b)(inputs[b]))
            if weights is None:
                losses.append(nn.functional.nll_loss(torch.stack([lr, lf], dim=1), target))
            else:
                nll = nn.functional.nll_loss(torch.stack([lr, lf], dim=1), target, reduction="none")
                losses.append((nll * weights.to(nll.device)[target]).mean())
        if not losses:
            raise RuntimeError(f"{self.meta.name}: every branch has finished its epochs; nothing to train")
        return torch.stack(losses).sum()


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    if seed is None:
        yield
        return
    state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def _branch_file(directory: Path, branch: str) -> Path | None:
    for suffix in WEIGHT_SUFFIXES:
        p = directory / f"{branch}{suffix}"
        if p.is_file():
            return p
    return None


def load_lrnet_weights(detector: LRNetDetector, source: str | os.PathLike) -> str:
    """Load ``source`` strictly into ``detector``; returns a description of what was loaded.

    A directory must hold ``<branch>.pth`` (or .pt/.bin/.safetensors) for every branch of the detector, in
    LRNet's key layout. A file is either one branch in LRNet's layout (only for lrnet_g1 / lrnet_g2) or a
    state dict of the whole detector (keys ``g1.*``/``g2.*``, e.g. a genshift checkpoint).
    """
    path = Path(source).expanduser()
    if path.is_dir():
        files = {b: _branch_file(path, b) for b in detector.branch_names}
        absent = [b for b, f in files.items() if f is None]
        if absent:
            raise FileNotFoundError(
                f"{detector.meta.name}: {path} holds no {' / '.join(f'{b}.pth' for b in absent)} (or .pt/.bin/"
                f".safetensors); LRNet's published weights are training/weights/torch/g1.pth and g2.pth of "
                f"{WEIGHTS_URL.rsplit('/tree', 1)[0]}")
        states = {b: load_state_dict_file(f) for b, f in files.items()}
        for b, module in detector.branches():
            check_keys(module.state_dict(), states[b], str(files[b]),
                       f"{detector.meta.name} branch {b} (LRNet's key layout)")
        for b, module in detector.branches():
            module.load_state_dict(states[b], strict=True)
        return str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{detector.meta.name}: pretrained weights {path} not found (expected a directory "
                                "holding g1.pth/g2.pth or a weight file)")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ValueError(f"pretrained weight file {path} has suffix {path.suffix!r}; expected one of {WEIGHT_SUFFIXES}")
    sd = load_state_dict_file(path)
    whole = set(detector.state_dict())
    if all("." in k and k.split(".", 1)[0] in BRANCHES["lrnet"] for k in sd):
        check_keys(detector.state_dict(), sd, str(path), f"{detector.meta.name} (keys g1.* / g2.*)")
        detector.load_state_dict(sd, strict=True)
        return str(path)
    if len(detector.branch_names) != 1:
        missing = sorted(whole)
        raise WeightsMismatchError(
            f"weights from {path} hold one LRNet branch ({len(sd)} keys, LRNet's layout) but {detector.meta.name} "
            f"has two (g1 and g2): pass a directory holding g1.pth and g2.pth, or a state dict with keys "
            f"g1.* and g2.*; missing keys: {missing[:25]}", missing, sorted(sd), [])
    (b, module), = detector.branches()
    check_keys(module.state_dict(), sd, str(path), f"{detector.meta.name} (LRNet's key layout)")
    module.load_state_dict(sd, strict=True)
    return str(path)


def make_lrnet(name: str, pretrained: str = "default", seed: int = 0, **kwargs) -> LRNetDetector:
    """Factory for lrnet, lrnet_g1, lrnet_g2.

    ``pretrained``: 'none' (random init from ``seed``), a directory with g1.pth/g2.pth, or a weight file.
    'default' is an error that says where LRNet's published weights are: nothing is downloaded here.
    Model hyper-parameters (LRNet's args_model.yaml) may be passed as keyword arguments.
    """
    text = os.fspath(pretrained)
    if text == "default":
        raise WeightsUnavailableError(
            f"{name}: LRNet has no weights genshift could fetch here. Pass --pretrained DIR, a directory holding "
            f"LRNet's published g1.pth and g2.pth (training/weights/torch/ of {WEIGHTS_URL.rsplit('/tree', 1)[0]}),"
            " --pretrained FILE for one branch, or --pretrained none to train from a seeded random init.")
    unknown = sorted(set(kwargs) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"{name}: unexpected arguments {unknown}; LRNet's model arguments are {sorted(DEFAULTS)}")
    with _seeded(seed):
        det = LRNetDetector(name, pretrained="none", **kwargs)
    if text.strip().lower() != "none":
        det.meta.pretrained = load_lrnet_weights(det, text)
    return det


def state_dict_in_lrnet_layout(detector: LRNetDetector) -> dict[str, Mapping[str, torch.Tensor]]:
    """branch → its state dict in LRNet's own key layout (what LRNet's torch.load + load_state_dict expects)."""
    return {b: {k: v.detach().cpu() for k, v in m.state_dict().items()} for b, m in detector.branches()}
