"""Source formats of images: the container (JPEG, PNG, WebP, other) and, for JPEG, the quality estimated from its
quantisation tables; the features a format-only detector sees; and the re-encoding suffix of eval profiles.

Why: the shortcut every AI-generated-image benchmark is accused of — reals are JPEG photos, fakes are PNG
renders — is measurable only when each sample's format is recorded (docs/formats.md).

- ``probe_bytes(data)`` / ``probe_file(path)`` -> ``(format, jpeg_quality)``: the format from the file's magic
  bytes (not its name); the quality from the DQT segments before the first scan.
- ``estimate_jpeg_quality(tables)``: the inverse of the IJG (libjpeg) quality scaling that libjpeg, libjpeg-turbo
  and every encoder built on them (Pillow, OpenCV, ImageMagick) use to make their tables: for each quality
  q = 1..100 the two standard tables (JPEG Annex K.1) are scaled exactly as ``jpeg_set_quality(q,
  force_baseline=TRUE)`` does, and the q whose tables are nearest (least squares of the logarithms) is returned.
  It is exact for those encoders; for other tables (cameras, Photoshop) it is the nearest IJG quality.
- A manifest records both per sample (``Sample.format``, ``Sample.jpeg_quality``). They are derived from the
  bytes whose sha256 the manifest checksum covers, so they do not enter the checksum: existing datasets keep
  their checksums. ``FORMATS_VERSION`` (in the manifest's ``extra``) says which estimator filled them.

This module is import-light (numpy only): the config schema checks profile names with it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path

import numpy as np

FORMATS = ("jpeg", "png", "webp", "other")
FORMATS_VERSION = 1  # bump when the probe or the quality estimate changes what it records

# JPEG Annex K.1 example tables in natural (row-major) order: libjpeg's std_luminance/chrominance_quant_tbl.
IJG_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.int64)
IJG_CHROMINANCE = np.array([
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    *([99] * 32),
], dtype=np.int64)


def _zigzag() -> np.ndarray:
    """ZIGZAG[k] = natural index of the k-th coefficient in zig-zag order (the order DQT segments store)."""
    order = []
    for s in range(15):
        rows = range(min(s, 7), max(0, s - 7) - 1, -1) if s % 2 == 0 else range(max(0, s - 7), min(s, 7) + 1)
        order += [r * 8 + (s - r) for r in rows]
    return np.array(order, dtype=np.int64)


ZIGZAG = _zigzag()


def ijg_table(base: np.ndarray, quality: int) -> np.ndarray:
    """The table libjpeg makes from `base` at `quality` (jpeg_quality_scaling + jpeg_add_quant_table with
    force_baseline): scale = 5000/q below 50, else 200 − 2q; entry = (base·scale + 50) // 100 clamped to 1..255."""
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return np.clip((np.asarray(base, dtype=np.int64) * scale + 50) // 100, 1, 255)


_QUALITIES = np.arange(1, 101)
_IJG = np.stack([np.stack([ijg_table(IJG_LUMINANCE, q), ijg_table(IJG_CHROMINANCE, q)]) for q in _QUALITIES])


def estimate_jpeg_quality(tables: Mapping[int, np.ndarray]) -> int | None:
    """The IJG quality (1..100) whose tables are nearest to `tables` (table id -> 64 values, natural order).

    Table 0 is compared with the luminance table, table 1 (when present) with the chrominance table, as libjpeg
    assigns them; distance = sum of squared differences of the logarithms (relative errors, so the large
    high-frequency entries do not outweigh the small ones). None without table 0.
    """
    if 0 not in tables:
        return None
    used = [(0, 0)] + ([(1, 1)] if 1 in tables else [])
    dist = np.zeros(len(_QUALITIES))
    for table_id, which in used:
        t = np.log(np.maximum(np.asarray(tables[table_id], dtype=np.float64), 1.0))
        dist += ((np.log(_IJG[:, which].astype(np.float64)) - t) ** 2).sum(axis=1)
    return int(_QUALITIES[int(np.argmin(dist))])


class JpegParseError(ValueError):
    """The JPEG marker structure is broken before the first scan."""


def jpeg_quantization_tables(data: bytes) -> dict[int, np.ndarray] | None:
    """Quantisation tables (id -> 64 values in natural order) defined before the first scan.

    None when `data` ends before the first scan (read more of the file); raises JpegParseError on a broken
    marker structure. Reads only the markers: nothing is decoded.
    """
    if data[:2] != b"\xff\xd8":
        raise JpegParseError("no JPEG start-of-image marker")
    tables: dict[int, np.ndarray] = {}
    i, n = 2, len(data)
    while True:
        while i < n and data[i] == 0xFF and i + 1 < n and data[i + 1] == 0xFF:  # fill bytes
            i += 1
        if i + 2 > n:
            return None
        if data[i] != 0xFF:
            raise JpegParseError(f"expected a marker at byte {i}, found 0x{data[i]:02x}")
        marker = data[i + 1]
        if marker in (0xDA, 0xD9):  # start of scan / end of image: every table of the first scan is known
            return tables
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if i + 4 > n:
            return None
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if length < 2:
            raise JpegParseError(f"marker 0x{marker:02x} at byte {i} has length {length}")
        end = i + 2 + length
        if end > n:
            return None
        if marker == 0xDB:
            seg = data[i + 4:end]
            while seg:
                precision, table_id = seg[0] >> 4, seg[0] & 0x0F
                size = 64 * (2 if precision else 1)
                if len(seg) < 1 + size:
                    raise JpegParseError(f"truncated quantisation table {table_id} at byte {i}")
                raw = seg[1:1 + size]
                zz = np.frombuffer(raw, dtype=">u2" if precision else np.uint8).astype(np.int64)
                natural = np.empty(64, dtype=np.int64)
                natural[ZIGZAG] = zz
                tables[table_id] = natural
                seg = seg[1 + size:]
        i = end


def sniff_format(head: bytes) -> str:
    """'jpeg', 'png', 'webp' or 'other', from the first bytes of a file (its name is not trusted)."""
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return "other"


def probe_bytes(data: bytes) -> tuple[str, int | None]:
    """(format, estimated JPEG quality or None) of an encoded image."""
    fmt = sniff_format(data[:16])
    if fmt != "jpeg":
        return fmt, None
    try:
        tables = jpeg_quantization_tables(data)
    except JpegParseError:
        return fmt, None
    return fmt, (estimate_jpeg_quality(tables) if tables else None)


_HEAD = 1 << 16


def probe_file(path: Path | str) -> tuple[str, int | None]:
    """probe_bytes of a file, reading only its first 64 KiB unless its tables lie further in."""
    with open(path, "rb") as f:
        data = f.read(_HEAD)
        if sniff_format(data[:16]) == "jpeg":
            try:
                if jpeg_quantization_tables(data) is None:
                    data += f.read()
            except JpegParseError:
                pass
    return probe_bytes(data)


def probe_sample(root: Path | str, path: str) -> tuple[str, int | None]:
    """(format, quality) of a manifest sample's image: a file under `root`, or an Arrow row (aigenbench:)."""
    from benchmark.imagestore import is_row_ref, read_bytes

    if is_row_ref(path):
        return probe_bytes(read_bytes(root, path))
    p = Path(path)
    return probe_file(p if p.is_absolute() else Path(root) / p)


def fill_formats(manifest):
    """A copy of `manifest` whose image samples all carry their format (probed from the files for those that do
    not, e.g. manifests built before formats were recorded, or by an older FORMATS_VERSION), or None when nothing
    had to change. Sequence samples (videos, landmark files) are not images and keep format ''. A file that
    cannot be read keeps '' (the data check reports it)."""
    from dataclasses import replace

    current = manifest.extra.get("formats_version") == FORMATS_VERSION
    todo = [i for i, s in enumerate(manifest.samples) if s.kind == "image" and (not s.format or not current)]
    if not todo:
        return None
    samples = list(manifest.samples)
    for i in todo:
        try:
            fmt, quality = probe_sample(manifest.root, samples[i].path)
        except (OSError, ValueError, IndexError, KeyError):
            fmt, quality = "", None
        samples[i] = replace(samples[i], format=fmt, jpeg_quality=quality)
    return type(manifest)(manifest.name, manifest.root, samples, dict(manifest.timeline),
                          dict(manifest.extra) | {"formats_version": FORMATS_VERSION})


def format_counts(samples: Sequence) -> dict[str, dict[str, int]]:
    """{'real'|'fake': {format: count}} of image samples (for `data info` and the docs)."""
    out: dict[str, dict[str, int]] = {"real": {}, "fake": {}}
    for s in samples:
        if s.kind != "image":
            continue
        side = out["fake" if s.label else "real"]
        side[s.format or "?"] = side.get(s.format or "?", 0) + 1
    return out


# ------------------------------------------------------------------ re-encoding eval profiles

class DegradationProfile(StrEnum):
    """The mandatory eval degradation chains (a profile name's base, before any `+reencode<Q>`)."""

    AIGENBENCH_V1 = "aigenbench-v1"  # the reference's chain as published, its defects included
    FIXED = "fixed"  # central crop, rounding and clipping, JPEG quality uniform in 50..100

    @property
    def repairs_reference(self) -> bool:
        """Whether the chain corrects the reference's defects (central crop, rounding, a quality range)."""
        return self is DegradationProfile.FIXED

    @property
    def uses_albumentations(self) -> bool:
        """Whether the chain's pixels depend on albumentations' version (the reference's own steps)."""
        return self is DegradationProfile.AIGENBENCH_V1


DEFAULT_BASE_SEED = 4321  # eval image at position p is degraded with seed 4321 + p (the reference's; base.yaml agrees)
REENCODE = "+reencode"
_PROFILE = re.compile(r"(?P<base>[A-Za-z0-9_.-]+?)(?:\+reencode(?P<quality>\d{1,3}))?")
BASE_PROFILES = tuple(DegradationProfile)  # strings: a member equals its value


def parse_profile(profile: str) -> tuple[DegradationProfile, int | None]:
    """'aigenbench-v1+reencode95' -> (AIGENBENCH_V1, 95); a plain profile -> (its member, None).

    ValueError for an unknown base profile (the closest one named) or a quality outside 1..100.
    """
    m = _PROFILE.fullmatch(str(profile))
    if m is None or m.group("base") not in BASE_PROFILES:
        close = difflib.get_close_matches(str(profile).partition(REENCODE)[0], BASE_PROFILES, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(f"unknown degradation profile {profile!r}; expected one of {', '.join(BASE_PROFILES)}, "
                         f"optionally followed by {REENCODE}<Q> (Q = JPEG quality 1..100), e.g. "
                         f"aigenbench-v1{REENCODE}95{hint}")
    quality = m.group("quality")
    if quality is not None and not 1 <= int(quality) <= 100:
        raise ValueError(f"degradation profile {profile!r}: re-encoding quality {int(quality)} is outside 1..100")
    return DegradationProfile(m.group("base")), (int(quality) if quality is not None else None)


def profile_problem(profile: str) -> str | None:
    """What is wrong with a profile name (None when it is fine), for the config schema."""
    try:
        parse_profile(profile)
    except ValueError as e:
        return str(e)
    return None


# ------------------------------------------------------------------ what a format-only detector sees

QUALITY_BIN = 5  # JPEG qualities 1-5, 6-10, ..., 96-100
FEATURE_NAMES: tuple[str, ...] = ("png", "webp", "other", "jpeg:unknown") + tuple(
    f"jpeg:{lo}-{lo + QUALITY_BIN - 1}" for lo in range(1, 101, QUALITY_BIN))


def feature_index(fmt: str, quality: int | None) -> int:
    """Which one-hot feature a (format, quality) pair sets."""
    if fmt == "jpeg":
        if quality is None:
            return FEATURE_NAMES.index("jpeg:unknown")
        return 4 + (min(max(int(quality), 1), 100) - 1) // QUALITY_BIN
    if fmt in ("png", "webp", "other"):
        return FEATURE_NAMES.index(fmt)
    raise ValueError(f"no format recorded ({fmt!r}); the manifest must record every image's format")


def format_features(pairs: Sequence[tuple[str, int | None]]) -> np.ndarray:
    """float32 (N, len(FEATURE_NAMES)) one-hot rows: the format, and for JPEG the quality in bins of 5.

    A linear model on these rows is a lookup table: one learned score per format and JPEG quality bin, the
    strongest shortcut that format and quality alone allow.
    """
    out = np.zeros((len(pairs), len(FEATURE_NAMES)), dtype=np.float32)
    for row, (fmt, quality) in enumerate(pairs):
        out[row, feature_index(fmt, quality)] = 1.0
    return out


def evaluated_format(fmt: str, quality: int | None, profile: str) -> tuple[str, int | None]:
    """The format of the file the evaluation decodes: the source's, or JPEG at Q under a `+reencode<Q>` profile
    (the mandatory chain's own JPEG steps come after and are not a source format)."""
    _, reencode = parse_profile(profile)
    return ("jpeg", reencode) if reencode is not None else (fmt, quality)
