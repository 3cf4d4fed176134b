"""The checkpoint format's owner (detectors.checkpoint): save, completeness check and strict load round trip, and
the refusals with what to do."""

from __future__ import annotations

import pytest
import torch

from detectors.checkpoint import (
    META_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    complete_checkpoint,
    load_checkpoint,
    load_detector_from_checkpoint,
    save_checkpoint,
)
from detectors.registry import create_detector


def test_save_check_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    det = create_detector("smallcnn_tune", pretrained="none", seed=1)
    identity = {"run_id": "r1", "window": 0, "training_complete": True}
    path = save_checkpoint(det, tmp_path, identity | {"detector_kwargs": {"seed": 1}})
    assert path == tmp_path / WEIGHTS_FILE and (tmp_path / META_FILE).is_file()
    assert complete_checkpoint(tmp_path, identity)
    assert not complete_checkpoint(tmp_path, identity | {"run_id": "another run"})
    fresh = create_detector("smallcnn_tune", pretrained="none", seed=2)
    load_checkpoint(fresh, tmp_path)
    for (k, a), b in zip(det.trainable_state_dict().items(), fresh.trainable_state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    rebuilt = load_detector_from_checkpoint(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(det.trainable_state_dict().values(),
                                                rebuilt.trainable_state_dict().values(), strict=True))


def test_swapped_weights_and_other_detector_are_refused(tmp_path):
    det = create_detector("smallcnn_tune", pretrained="none", seed=1)
    save_checkpoint(det, tmp_path, {"training_complete": True})
    with pytest.raises(CheckpointError, match="holds weights of 'smallcnn_tune'"):
        load_checkpoint(create_detector("smallcnn_probe", pretrained="none", seed=1), tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes((tmp_path / WEIGHTS_FILE).read_bytes()[:-1] + b"\0")
    assert not complete_checkpoint(tmp_path, {})
    with pytest.raises(CheckpointError, match=f"sha256 differs from {META_FILE}'s.*delete .*done"):
        load_checkpoint(det, tmp_path)
