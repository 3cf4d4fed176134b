"""Windows from release dates (ties merged), generator ids, the AI-GenBench v1 table."""

import datetime as dt

import pytest
from helpers import ROOT

from benchmark.timeline import (
    TimelineError,
    check_timeline_covers,
    generator_id_to_name,
    load_timeline_yaml,
    make_windows,
)

V1 = ROOT / "configs" / "timelines" / "aigenbench-v1.yaml"

DESIGN_TABLE = [
    ["CycleGAN", "Cascaded Refinement Networks", "ProGAN", "StarGAN"],
    ["SN-PatchGAN", "BigGAN", "IMLE", "StyleGAN1"],
    ["GauGAN", "StyleGAN2", "DDPM", "CIPS"],
    ["VQGAN", "GANformer", "ADM", "StyleGAN3"],
    ["LaMa", "FaceSynthetics", "ProjectedGAN", "Palette"],
    ["VQ-Diffusion", "Denoising Diffusion GAN", "Glide", "Latent Diffusion"],
    ["Midjourney", "MAT", "Diffusion GAN (ProjectedGAN)", "Diffusion GAN (StyleGAN2)"],
    ["Stable Diffusion 1.4", "Stable Diffusion 1.5", "Stable Diffusion 2.1", "DeepFloyd IF"],
    ["Stable Diffusion XL 1.0", "DALL-E 3", "FLUX 1 Dev", "FLUX 1 Schnell"],
]


def d(s):
    return dt.date.fromisoformat(s)


def test_aigenbench_v1_windows_match_design_table():
    tl = load_timeline_yaml(V1)
    assert len(tl) == 36
    assert make_windows(tl, 4) == DESIGN_TABLE


def test_aigenbench_v1_generator_ids_are_sorted_names():
    ids = generator_id_to_name(load_timeline_yaml(V1))
    assert ids[0] == "" and ids[1] == "ADM" and ids[36] == "VQGAN" and len(ids) == 37


def test_tie_with_last_taken_joins_the_window():
    tl = {"a": d("2020-01-01"), "b": d("2020-02-01"), "c": d("2020-02-01"), "d": d("2020-03-01"),
          "e": d("2020-04-01")}
    # b is the 2nd taken with gpw=2; c has b's date so it joins window 0 (size 3).
    assert make_windows(tl, 2) == [["a", "b", "c"], ["d", "e"]]


def test_tie_at_window_start_and_short_last_window():
    tl = {"a": d("2020-01-01"), "b": d("2020-01-01"), "c": d("2020-01-01"), "d": d("2021-01-01"),
          "e": d("2022-01-01")}
    # a, b, c share a date: all in window 0 even though gpw=2 (the reference's loop does the same).
    assert make_windows(tl, 2) == [["a", "b", "c", "d"], ["e"]]
    assert make_windows(tl, 10) == [["a", "b", "c", "d", "e"]]


def test_bad_inputs_are_reported(tmp_path):
    with pytest.raises(TimelineError, match="generators_per_window"):
        make_windows({"a": d("2020-01-01")}, 0)
    bad = tmp_path / "t.yaml"
    bad.write_text("GAN1: 2020-01-01\nGAN2: not-a-date\n")
    with pytest.raises(TimelineError, match="GAN2"):
        load_timeline_yaml(bad)
    with pytest.raises(TimelineError, match="GAN3"):
        check_timeline_covers({"GAN1": d("2020-01-01")}, {"GAN1", "GAN3"}, "my.csv")
