"""Per-window localization maps: stored compactly, read back exactly, summarised with the challenge score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.eval_plan import make_eval_plan
from benchmark.timeline import generator_id_to_name
from detectors import create_detector
from leaderboard.pixel_metrics import localization_metrics
from protocols import localization as loc


def test_maps_round_trip_and_summary(cache_dir, tmp_path) -> None:
    from benchmark.synthetic import build_synthetic

    m = build_synthetic(cache_dir, "smoke", seed=0, progress=False)
    plan = make_eval_plan(m.split("eval"), generator_id_to_name(m.timeline))
    det = create_detector("smallseg_tune", widths=(8, 16, 16, 32), decoder_width=8)
    by_id = {s.id: s for s in m.split("eval")}
    want = [i for i, sid in enumerate(plan.sample_ids) if by_id[int(sid)].mask]
    assert len(want) >= 8
    from benchmark.images import adapt_to_input, load_rgb

    for full in (True, False):
        arrays = loc.score_maps(det, m, plan, batch_size=5, full_image=full)
        assert arrays["positions"].tolist() == want
        path = loc.write_localization(tmp_path, arrays)
        masks, maps = loc.read_localization(path)
        s = by_id[int(plan.sample_ids[want[0]])]
        want_shape = (s.height, s.width) if full else (64, 64)
        assert len(masks) == len(maps) == len(want) and masks[0].shape == maps[0].shape == want_shape
        # the maps equal a direct forward pass, up to the 1/255 quantisation
        img = load_rgb(m.abspath(s.path))
        img = img if full else adapt_to_input(img, 64, "center_crop")
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
        with torch.no_grad():
            direct = torch.sigmoid(det.eval().forward_with_map((x / 255 - 0.5) / 0.25)[1])[0, 0].numpy()
        assert np.abs(maps[0] - direct).max() <= 0.5 / 255 + 1e-6
        summary = loc.window_localization(path, image_auroc=0.8)
        assert summary["pixel_f1"] == localization_metrics(masks, maps)["pixel_f1"]
        assert summary["per_image_score"] == pytest.approx((0.8 + summary["pixel_f1"] + summary["pixel_iou"]) / 3)
        assert summary["loupe_score"] == pytest.approx((0.8 + summary["loupe_f1"] + summary["loupe_miou"]) / 3)
    (tmp_path / "bad.npz").write_bytes(b"")
    np.savez(tmp_path / "bad.npz", maps_u8=np.zeros(5, np.uint8), masks_packed=np.zeros(1, np.uint8),
             shapes=np.asarray([[2, 2]]))
    with pytest.raises(ValueError, match="damaged"):
        loc.read_localization(tmp_path / "bad.npz")


def test_plain_detector_is_refused(cache_dir) -> None:
    from benchmark.synthetic import build_synthetic

    m = build_synthetic(cache_dir, "smoke", seed=0, progress=False)
    plan = make_eval_plan(m.split("eval"), generator_id_to_name(m.timeline))
    with pytest.raises(ValueError, match="no localization head"):
        loc.score_maps(create_detector("smallcnn_tune"), m, plan)
