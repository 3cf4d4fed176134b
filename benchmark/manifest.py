"""Sample records and the manifest that lists them with per-image sha256 and a manifest checksum."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from common.atomic import atomic_write_text

MANIFEST_SCHEMA = 1
# `val`: an optional validation split (LRNet's layout has one); only selection reads it, never the windows'
# training sets nor the evaluation.
SPLITS = ("train", "eval", "val")


class ManifestError(ValueError):
    """A manifest or the files it lists are not what they should be."""


@dataclass(frozen=True)
class Sample:
    """One image of a dataset: the record every source yields (DESIGN §3.1)."""

    id: int  # stable int, row index in its split
    split: str  # "train" | "eval"
    label: int  # 0 real, 1 fake
    generator: str  # "" for real images
    path: str  # relative to the manifest root (or absolute)
    width: int
    height: int
    origin: str = ""
    mask: str | None = None  # relative path of a binary PNG mask (partial fakes), else None
    sha256: str = ""
    # The video track (DESIGN §9): a sample may be a sequence. kind "landmarks" = a landmark text file (one frame
    # of 68 (x, y) points per line), "video" = a video file whose frames are sampled. `compression` is the
    # source's compression level (raw | c23 | c40 in FaceForensics++), `video` the video id (file stem),
    # `frames` the number of frames. Images keep the defaults, which stay out of the manifest checksum.
    kind: str = "image"
    compression: str = ""
    video: str = ""
    frames: int = 0
    # The source format of an image file, from its bytes (benchmark.formats): jpeg | png | webp | other; '' = not
    # recorded (sequence samples). `jpeg_quality`: for JPEG, the quality estimated from its quantisation tables.
    format: str = ""
    jpeg_quality: int | None = None


SEQUENCE_KINDS = ("landmarks", "video")
_SAMPLE_DEFAULTS = {"kind": "image", "compression": "", "video": "", "frames": 0}
# Derived from the image bytes, whose sha256 the checksum already covers: never part of the checksum, so a
# manifest's checksum is the same with or without them (datasets built before they existed keep theirs).
DERIVED_FIELDS = ("format", "jpeg_quality")


def sample_record(s: Sample) -> dict:
    """The sample as a dict for the checksum: the video-track fields only when they differ from an image's, so
    image manifests keep the checksums they had before those fields existed; the DERIVED_FIELDS never. A copy of
    vars(): a Sample's fields are all scalars, so this is asdict()'s dict without its deep copies (20x faster: a
    cached 144,000-row manifest loads in about a second, not 15)."""
    d = dict(vars(s))
    for k, v in _SAMPLE_DEFAULTS.items():
        if d[k] == v:
            del d[k]
    for k in DERIVED_FIELDS:
        del d[k]
    return d


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Manifest:
    """Every sample of a dataset, its generator timeline and a checksum over both."""

    name: str
    root: Path
    samples: list[Sample]
    timeline: dict[str, dt.date]
    extra: dict = field(default_factory=dict)
    _checksum_memo: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def checksum(self) -> str:
        """sha256 over the canonical JSON of records and timeline (not the root path).

        Memoised (a run asks for it several times a window; 0.2 s each on the embedded benchmark): reused while
        the samples (frozen) and the timeline compare equal to those it was computed from (by identity first).
        """
        state = (tuple(self.samples), tuple(sorted(self.timeline.items())))
        if self._checksum_memo is None or self._checksum_memo[0] != state:
            self._checksum_memo = (state, self._compute_checksum())
        return self._checksum_memo[1]

    def _compute_checksum(self) -> str:
        payload = json.dumps(
            {
                "schema": MANIFEST_SCHEMA,
                "samples": [sample_record(s) for s in self.samples],
                "timeline": {g: d.isoformat() for g, d in sorted(self.timeline.items())},
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def split(self, split: str) -> list[Sample]:
        """Samples of one split, in id order."""
        if split not in SPLITS:
            raise ManifestError(f"unknown split {split!r}; expected one of {SPLITS}")
        return sorted((s for s in self.samples if s.split == split), key=lambda s: s.id)

    def abspath(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.root / p

    def save(self, path: Path) -> None:
        """Write the manifest as JSON (atomic)."""
        doc = {
            "schema": MANIFEST_SCHEMA,
            "name": self.name,
            "checksum": self.checksum,
            "timeline": {g: d.isoformat() for g, d in sorted(self.timeline.items())},
            "extra": self.extra,
            "samples": [dict(vars(s)) for s in self.samples],  # asdict()'s dicts (scalar fields), 20x faster
        }
        atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: Path, root: Path | None = None) -> Manifest:
        """Read a manifest written by `save`; its stored checksum must match its content."""
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ManifestError(f"cannot read manifest {path}: {e}") from e
        if not isinstance(doc, dict) or doc.get("schema") != MANIFEST_SCHEMA:
            found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
            raise ManifestError(f"{path}: schema {found!r}, expected {MANIFEST_SCHEMA}")
        m = cls(
            name=doc["name"],
            root=Path(root) if root is not None else Path(path).parent,
            samples=[Sample(**s) for s in doc["samples"]],
            timeline={g: dt.date.fromisoformat(d) for g, d in doc["timeline"].items()},
            extra=doc.get("extra", {}),
        )
        if m.checksum != doc.get("checksum"):
            raise ManifestError(
                f"{path}: manifest checksum mismatch (stored {doc.get('checksum')}, "
                f"computed {m.checksum}); the file was edited or truncated — rebuild it"
            )
        return m

    def verify_files(self, samples: Iterable[Sample] | None = None) -> list[tuple[Sample, str]]:
        """Re-hash image files; returns (sample, problem) for every missing or changed file."""
        bad: list[tuple[Sample, str]] = []
        for s in self.samples if samples is None else samples:
            p = self.abspath(s.path)
            if not p.is_file():
                bad.append((s, f"missing file {p}"))
            elif s.sha256 and sha256_file(p) != s.sha256:
                bad.append((s, f"sha256 mismatch for {p}"))
        return bad
