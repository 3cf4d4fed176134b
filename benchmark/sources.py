"""Dataset sources by spec string: `synthetic[:preset[@seed]]`, `aigenbench:PATH`, `folder:ROOT`, `csv:FILE`,
and the video track's `landmarks:ROOT|FILE.csv`, `videos:ROOT|FILE.csv`, `synthetic-landmarks[:preset[@seed]]`.

Real sources take a timeline as `?timeline=YAML` appended to the spec (a path, or the name of a shipped
timeline in configs/timelines/); without it, `folder:`/`csv:` read `timeline.yaml` in ROOT / beside the
CSV, `aigenbench:` uses the shipped `aigenbench-v1` timeline and `landmarks:`/`videos:` read ROOT's (or the
CSV's folder's) `timeline.yaml`, else the shipped `face-manipulation` timeline. `csv:` also takes `?root=DIR`,
the dataset root its paths are relative to and must stay inside (default: the CSV's folder); `videos:` takes
`?backend=pyav|opencv` (the decoder, default pyav); options join with `&`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from benchmark.manifest import Manifest
from benchmark.source_records import ScanResult
from benchmark.timeline import TimelineError, load_timeline_yaml
from common.configs import config_dir

SOURCE_KINDS = ("synthetic", "aigenbench", "folder", "csv", "landmarks", "videos", "synthetic-landmarks")
SEQUENCE_SOURCES = ("landmarks", "videos")
TIMELINES_DIR = config_dir() / "timelines"
DEFAULT_AIGENBENCH_TIMELINE = "aigenbench-v1"
DEFAULT_FACE_TIMELINE = "face-manipulation"
OPTION_VALUES = {"backend": ("pyav", "opencv")}  # options whose values are a fixed set
_MAX_LISTED = 20


class SourceError(ValueError):
    """A dataset spec cannot be resolved."""


def default_cache_dir() -> Path:
    """$GENSHIFT_CACHE, else ~/.cache/genshift."""
    env = os.environ.get("GENSHIFT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "genshift"


def resolve_cache_dir(value: str | Path | None) -> Path:
    """The cache directory a command uses: `value` (the `cache_dir` config key or a --cache-dir flag, `~`
    expanded) when given, else `default_cache_dir()`."""
    return Path(value).expanduser() if value else default_cache_dir()


OPTIONS = {"timeline": ("aigenbench", "folder", "csv", "landmarks", "videos"), "root": ("csv",),
           "backend": ("videos",)}  # option -> source kinds taking it


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """`kind:ARG?key=value&...` -> (kind, ARG, options); options: `timeline` (real sources), `root` (csv)."""
    kind, _, rest = spec.partition(":")
    arg, _, query = rest.partition("?")
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        k, eq, v = part.partition("=")
        if not eq or k not in OPTIONS or not v or k in options:
            raise SourceError(f"dataset {spec!r}: unknown, empty or repeated option {part!r}; options are "
                              "?timeline=PATH_OR_NAME, for csv: ?root=DIR, for videos: ?backend=pyav|opencv")
        if kind in SOURCE_KINDS and kind not in OPTIONS[k] and not (kind == "synthetic" and k == "timeline"):
            raise SourceError(f"dataset {spec!r}: option {k}= is for {', '.join(OPTIONS[k])} sources only")
        if k in OPTION_VALUES and v not in OPTION_VALUES[k]:
            raise SourceError(f"dataset {spec!r}: {k}={v!r}; expected one of {OPTION_VALUES[k]}")
        options[k] = v
    if kind not in SOURCE_KINDS:
        raise SourceError(f"dataset {spec!r}: unknown source kind {kind!r}; expected one of "
                          f"{', '.join(k + ':...' for k in SOURCE_KINDS)}")
    if not kind.startswith("synthetic") and not arg:
        raise SourceError(f"dataset {spec!r}: {kind}: needs a path, e.g. {kind}:/data/my_dataset")
    if kind.startswith("synthetic") and options:
        raise SourceError(f"dataset {spec!r}: the synthetic source has its own timeline; drop ?timeline=")
    return kind, arg, options


def _timeline(kind: str, arg: str, options: dict[str, str], spec: str):
    """(timeline, where it came from) for a real source."""
    choice = options.get("timeline")
    base = Path(arg).expanduser()
    if kind == "folder" and not base.is_dir():
        raise SourceError(f"dataset {spec!r}: no such directory {base}")
    if kind in ("csv", "aigenbench") and not base.exists():
        raise SourceError(f"dataset {spec!r}: no such {'file' if kind == 'csv' else 'directory'} {base}")
    if choice is None:
        if kind == "aigenbench":
            choice = DEFAULT_AIGENBENCH_TIMELINE
        elif kind in SEQUENCE_SOURCES:
            base = Path(arg).expanduser()
            local = (base.parent if base.is_file() else base) / "timeline.yaml"
            choice = str(local) if local.is_file() else DEFAULT_FACE_TIMELINE
        else:
            path = (base if kind == "folder" else base.parent) / "timeline.yaml"
            if not path.is_file():
                raise SourceError(
                    f"dataset {spec!r}: no timeline; put a timeline.yaml ('generator: YYYY-MM-DD' per line) at "
                    f"{path} or append ?timeline=PATH to the spec"
                )
            choice = str(path)
    path = Path(choice).expanduser()
    if not path.is_file() and (TIMELINES_DIR / f"{choice}.yaml").is_file():
        path = TIMELINES_DIR / f"{choice}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in TIMELINES_DIR.glob("*.yaml"))
        raise SourceError(f"dataset {spec!r}: timeline {choice!r} is neither a file nor a shipped timeline "
                          f"({shipped})")
    try:
        return load_timeline_yaml(path), str(path)
    except TimelineError as e:
        raise SourceError(f"dataset {spec!r}: {e}") from e


def scan_source(spec: str, cache_dir: Path, progress: bool = True, fresh: bool = False,
                need_timeline: bool = True) -> ScanResult:
    """Manifest of the valid records plus every record-level problem, without refusing anything.

    `fresh`: ignore a cached scan and hash every file again (the new scan replaces the cached one).
    ``need_timeline=False`` (`genshift predict`, test datasets): every generator or method is a label only,
    without dates, and every row is kept (the manifest's timeline is then empty; a folder needs only one of
    train/ and eval/). The synthetic sources keep their own timelines.
    """
    kind, arg, options = parse_spec(spec)
    if kind == "synthetic-landmarks":
        from benchmark.synthetic_landmarks import PRESETS, build_synthetic_landmarks

        preset, _, seed = (arg or "default").partition("@")
        if preset not in PRESETS:
            raise SourceError(f"dataset {spec!r}: unknown synthetic-landmarks preset {preset!r}; "
                              f"available: {sorted(PRESETS)}")
        root = build_synthetic_landmarks(Path(cache_dir) / "datasets", preset=preset, seed=int(seed or 0),
                                         progress=progress)
        return scan_source(f"landmarks:{root}", cache_dir, progress, fresh=fresh, need_timeline=need_timeline)
    if kind in SEQUENCE_SOURCES:
        from benchmark.source_sequences import scan_layout, scan_sequence_csv

        timeline, timeline_src = _timeline(kind, arg, options, spec) if need_timeline else (None, "")
        path = Path(arg).expanduser()
        backend = options.get("backend", "pyav")
        try:
            if path.is_file() and path.suffix.lower() == ".csv":
                return scan_sequence_csv(kind, path, timeline, timeline_src, Path(cache_dir), backend)
            return scan_layout(kind, path, timeline, timeline_src, Path(cache_dir), backend)
        except (FileNotFoundError, ValueError) as e:
            if isinstance(e, SourceError):
                raise
            raise SourceError(f"dataset {spec!r}: {e}") from e
    if kind == "synthetic":
        from benchmark.synthetic import SYNTHETIC_PRESETS, build_synthetic

        preset, _, seed = (arg or "default").partition("@")
        if preset not in SYNTHETIC_PRESETS:
            raise SourceError(f"dataset {spec!r}: unknown synthetic preset {preset!r}; "
                              f"available: {sorted(SYNTHETIC_PRESETS)}")
        return ScanResult(build_synthetic(Path(cache_dir) / "datasets", preset=preset, seed=int(seed or 0),
                                          progress=progress))
    timeline, timeline_src = _timeline(kind, arg, options, spec) if need_timeline else (None, "")
    try:
        if kind == "aigenbench":
            from benchmark.source_aigenbench import scan_aigenbench

            return scan_aigenbench(Path(arg), timeline, timeline_src, Path(cache_dir), progress, fresh=fresh)
        from benchmark.source_files import scan_csv, scan_folder

        if kind == "folder":
            return scan_folder(Path(arg), timeline, timeline_src, Path(cache_dir), fresh=fresh)
        return scan_csv(Path(arg), timeline, timeline_src, Path(cache_dir), root=options.get("root"), fresh=fresh)
    except (FileNotFoundError, ValueError) as e:
        if isinstance(e, SourceError):
            raise
        raise SourceError(f"dataset {spec!r}: {e}") from e


def load_source(spec: str, cache_dir: Path, progress: bool = True) -> Manifest:
    """Resolve a dataset spec to a manifest; refuse it when any record is bad (every bad row is listed)."""
    scan = scan_source(spec, cache_dir, progress)
    for note in scan.notes:
        print(f"genshift: {note}", file=sys.stderr)
    errors = scan.errors
    if errors:
        listed = "\n  ".join(p.line() for p in errors[:_MAX_LISTED])
        more = f"\n  ... and {len(errors) - _MAX_LISTED} more" if len(errors) > _MAX_LISTED else ""
        raise SourceError(
            f"dataset {spec!r}: {len(errors)} bad record(s):\n  {listed}{more}\n"
            f"Fix them (`genshift data check {spec}` lists everything)."
        )
    if not scan.manifest.samples:
        raise SourceError(f"dataset {spec!r}: no usable images")
    return scan.manifest
