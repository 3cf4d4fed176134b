"""What every real-data source produces: a manifest of valid records plus the record-level problems found.

A source never stops at the first bad row: it collects every problem (row named) so that
`genshift data check` can list them all, while `load_source` refuses the dataset if any is an error.
Built manifests are cached under the cache dir, keyed by what determines them, so a second load is fast.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmark.formats import fill_formats
from benchmark.manifest import Manifest, ManifestError, Sample
from common.atomic import atomic_write_text

SCAN_FORMAT = 1  # bump when a source's records change for the same input


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset. `severity` is 'error' (refuse) or 'warning' (report only)."""

    kind: str  # bad_label, missing_date, missing_file, unreadable, truncated, too_small, duplicate, ...
    severity: str
    message: str
    split: str = ""
    id: int | None = None
    path: str = ""

    def line(self) -> str:
        where = f"{self.split} id {self.id}: " if self.id is not None else ""
        return f"[{self.kind}] {where}{self.message}"


@dataclass
class ScanResult:
    """Valid records as a manifest, the record-level problems, and notes (e.g. rows dropped on purpose)."""

    manifest: Manifest
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def read_csv_rows(file: Path, spec: str, columns: Sequence[str], optional: str
                  ) -> tuple[str, list[tuple[str, dict[str, str]]], list[Problem]]:
    """A user's CSV source: (its text, [(where, record with stripped keys and values)], problems). Refuses
    (ValueError, one line naming `spec`) text that is not UTF-8, a header without `columns` (`optional` names the
    optional ones in the message) and an unreadable CSV; a row with more fields than the header is a `bad_row`
    problem and left out."""
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{spec}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"{spec}: header must have columns {', '.join(columns)}{optional}; missing {missing} "
                         f"(header: {header})")
    try:
        records = list(reader)
    except csv.Error as e:
        raise ValueError(f"{spec}: line {reader.line_num}: not a readable CSV row ({e})") from e
    rows: list[tuple[str, dict[str, str]]] = []
    problems: list[Problem] = []
    for n, raw in enumerate(records, start=1):
        where = f"{file.name} row {n} (line {n + 1})"
        if None in raw:  # more fields than the header names
            problems.append(Problem("bad_row", "error", f"{where}: {len(header) + len(raw[None])} fields, the header "
                                    f"names {len(header)}"))
            continue
        rows.append((where, {(k or "").strip(): (v or "").strip() for k, v in raw.items()}))
    return text, rows, problems


def restrict_timeline(
    timeline: dict[str, dt.date], samples: list[Sample], source: str
) -> tuple[dict[str, dt.date], list[str]]:
    """Keep the timeline entries of generators that have images; note the others (they would be empty)."""
    present = {s.generator for s in samples if s.label == 1}
    unused = sorted(set(timeline) - present)
    notes = []
    if unused:
        notes.append(
            f"{source}: {len(unused)} timeline generator(s) have no images and are left out of the "
            f"windows: {unused}"
        )
    return {g: d for g, d in timeline.items() if g in present}, notes


def cache_key(kind: str, parts: dict) -> str:
    """Short digest of everything that determines a scan."""
    payload = json.dumps({"kind": kind, "format": SCAN_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def cache_path(cache_dir: Path, kind: str, key: str) -> Path:
    return Path(cache_dir) / "manifests" / f"{kind}-{key}.json"


def save_scan(path: Path, scan: ScanResult) -> None:
    """Manifest next to its problems and notes (manifest checksum verified on load)."""
    scan.manifest.save(path)
    atomic_write_text(
        path.with_suffix(".scan.json"),
        json.dumps({"checksum": scan.manifest.checksum, "problems": [asdict(p) for p in scan.problems],
                    "notes": scan.notes}, indent=1),
    )


def load_scan(path: Path, root: Path) -> ScanResult | None:
    """A cached scan, or None when absent or inconsistent (then the caller rebuilds it)."""
    side = path.with_suffix(".scan.json")
    if not path.is_file() or not side.is_file():
        return None
    try:
        m = Manifest.load(path, root=root)
        doc = json.loads(side.read_text())
    except (ManifestError, OSError, ValueError, TypeError, KeyError) as e:
        print(f"genshift: cached manifest {path} is unusable ({e}); rebuilding it")
        return None
    if not isinstance(doc, dict) or doc.get("checksum") != m.checksum:
        print(f"genshift: cached manifest {path} does not match its problem list; rebuilding it")
        return None
    scan = ScanResult(m, [Problem(**p) for p in doc["problems"]], list(doc.get("notes", [])))
    filled = fill_formats(m)  # a scan cached before source formats were recorded: probe them once, keep them
    if filled is not None:
        scan.manifest = filled
        save_scan(path, scan)
    return scan
