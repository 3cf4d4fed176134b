"""A detector's description before it is built, so that a run whose caches do not fit its budget is refused
before torch and the model library are imported (those imports alone take seconds).

The stores' sizes need only a few facts about the detector: its input size and kind, its mode, its feature size
and whether it localizes. A named detector declares them in the registry (detectors/builtins.py `DECLARED`,
`register_detector(..., meta=...)`); `describe_detector` reads that first. For the rest (family patterns such as
`timm:<model>`, plugins' entry points) every run (and `genshift cache build`) that builds the detector writes
its description to `<cache_dir>/detectors/<digest>.json`, keyed by the detector's name, its pretrained source and
a fingerprint of the code that builds it (genshift's detectors package, the model libraries' versions, a
plugin's version). A description is used only to refuse early: the run itself always builds the detector and
plans with it.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

from common.atomic import atomic_write_text
from protocols.config_model import ConfigLike, run_config

MEMO_DIR = "detectors"
MEMO_FORMAT = 1
_LIBRARIES = ("torch", "torchvision", "timm", "open_clip_torch")
_FIELDS = {"name": str, "mode": str, "input_size": int, "input_kind": str, "feature_dim": int, "eval_resize": str,
           "has_localization": bool}


def _code_fingerprint(name: str) -> str | None:
    """What builds `name`: genshift's detectors package source and the libraries' versions, plus a plugin's own
    version; None for a detector registered from Python at run time (its code cannot be fingerprinted)."""
    from importlib.metadata import EntryPoint

    from detectors.registry import LazyFactory, lookup

    found = lookup(name)
    if found is None:
        return None
    _, factory = found
    h = hashlib.sha256()
    if isinstance(factory, EntryPoint):
        dist = getattr(factory, "dist", None)
        if dist is None:
            return None
        h.update(f"plugin {factory.value} {dist.name}={dist.version};".encode())
    elif not (isinstance(factory, LazyFactory) and factory.target.startswith("detectors.")):
        return None  # built into genshift (hashed below) or nothing
    for lib in _LIBRARIES:
        try:
            h.update(f"{lib}={metadata.version(lib)};".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{lib}=absent;".encode())
    import detectors

    for path in sorted(Path(detectors.__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _memo_key(cfg: ConfigLike) -> dict | None:
    rc = run_config(cfg)
    name, pretrained = rc.detector, rc.pretrained
    code = _code_fingerprint(name)
    if code is None:
        return None
    key = {"format": MEMO_FORMAT, "detector": name, "pretrained": pretrained, "code": code}
    weights = Path(pretrained).expanduser()
    if weights.is_file():  # a weights file: its identity, in case the factory reads its shape from it
        st = weights.stat()
        key["weights_file"] = [str(weights.resolve()), st.st_size, st.st_mtime_ns]
    return key


def _memo_path(cache_dir: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir) / MEMO_DIR / f"{digest}.json"


def _described(meta: dict) -> SimpleNamespace:
    """A description shaped like the detector for the cache plan: `meta` with DetectorMeta's attributes the plan
    reads, `is_probe`."""
    return SimpleNamespace(meta=SimpleNamespace(**{f: meta[f] for f in _FIELDS}), is_probe=meta["mode"] == "probe")


def describe_detector(cfg: ConfigLike, cache_dir: Path) -> SimpleNamespace | None:
    """The run's detector described without building it: its registration's declared metadata, else the
    description remembered in `cache_dir`, else None."""
    from detectors.registry import declared_meta

    declared = declared_meta(run_config(cfg).detector)
    return _described(declared) if declared is not None else recall_meta(cfg, cache_dir)


def check_declared(detector) -> None:
    """Raise RuntimeError if a built detector's metadata differs from what its registration declared (a wrong
    declaration would size the caches wrongly: a defect of the registration, not of the user's input)."""
    from detectors.registry import declared_meta

    declared = declared_meta(detector.meta.name)
    if declared is None:
        return
    wrong = {f: (declared[f], getattr(detector.meta, f, None)) for f in _FIELDS
             if declared[f] != getattr(detector.meta, f, None)}
    if wrong:
        raise RuntimeError(f"detector {detector.meta.name!r} was registered with metadata that its model does not "
                           f"have (field: (declared, built)): {wrong}; fix its registration's declared metadata")


def recall_meta(cfg: ConfigLike, cache_dir: Path) -> SimpleNamespace | None:
    """The remembered description of the run's detector, shaped like the detector for the cache plan (`meta` with
    DetectorMeta's attributes the plan reads, `is_probe`), or None when there is none for exactly this detector,
    source and code."""
    try:
        key = _memo_key(cfg)
    except (ValueError, OSError):  # an unknown name is reported when the detector is built
        return None
    if key is None:
        return None
    try:
        doc = json.loads(_memo_path(cache_dir, key).read_text())
    except (OSError, ValueError):
        return None
    meta = doc.get("meta") if isinstance(doc, dict) and doc.get("key") == key else None
    if not isinstance(meta, dict) or any(type(meta.get(f)) is not t for f, t in _FIELDS.items()):
        return None
    return _described(meta)


def remember_meta(cfg: ConfigLike, cache_dir: Path, detector) -> None:
    """Write the description of the detector a run built (atomic; only when it is new or changed, and only for a
    detector whose registration declares nothing)."""
    from detectors.registry import declared_meta

    if declared_meta(run_config(cfg).detector) is not None:
        return
    key = _memo_key(cfg)
    if key is None:
        return
    meta = detector.meta
    doc = {"key": key, "meta": {f: getattr(meta, f, None) for f in _FIELDS}}
    path = _memo_path(cache_dir, key)
    try:
        old = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        old = None
    if old == doc:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True))
