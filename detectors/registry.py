"""Name -> factory registry for detectors (modelled on timm's register_model/create_model).

Names are ``<backbone>_<probe|tune>``; patterns (fnmatch, e.g. ``timm:*``) route whole families to one factory.
Plugins register under the entry-point group ``genshift.detectors`` (entry-point name = detector name or
pattern, value = factory). A factory is called as ``factory(name, pretrained=..., **kwargs)`` and its own
exceptions propagate unchanged.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

from .base import MODES, Detector

Factory = Callable[..., Detector]
ENTRY_POINT_GROUP = "genshift.detectors"
_BUILTIN_MODULES = (
    "detectors.smallcnn",
    "detectors.segmentation",
    "detectors.openclip_models",
    "detectors.timm_models",
    "detectors.dinov2_models",
    "detectors.torchvision_models",
)

_exact: dict[str, Factory] = {}
_patterns: dict[str, Factory] = {}
_builtins_loaded = False
_entry_points: dict[str, EntryPoint] | None = None


class UnknownDetectorError(KeyError, ValueError):
    """No factory for a detector name; the message lists the closest known names."""

    def __init__(self, message: str, name: str = "", suggestions: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.suggestions = suggestions or []

    def __str__(self) -> str:  # KeyError would otherwise print the repr of its argument
        return self.message


def split_mode(name: str) -> tuple[str, str]:
    """'RN50_probe' -> ('RN50', 'probe'); raise UnknownDetectorError if the mode suffix is missing."""
    base, sep, mode = name.rpartition("_")
    if not sep or not base or mode not in MODES:
        raise UnknownDetectorError(
            f"detector name {name!r} must end with _probe or _tune (e.g. {name}_tune, {name}_probe)", name
        )
    return base, mode


def _is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


def register_detector(name_or_pattern: str, factory: Factory, *, overwrite: bool = False) -> Factory:
    """Register ``factory`` for a full name, a backbone (registers both _probe and _tune) or an fnmatch pattern."""
    if not callable(factory):
        raise TypeError(f"factory for {name_or_pattern!r} is not callable: {factory!r}")
    if _is_pattern(name_or_pattern):
        targets, table = [name_or_pattern], _patterns
    elif name_or_pattern.rpartition("_")[2] in MODES:
        targets, table = [name_or_pattern], _exact
    else:
        targets, table = [f"{name_or_pattern}_{m}" for m in MODES], _exact
    for t in targets:
        if t in table and table[t] is not factory and not overwrite:
            raise ValueError(f"detector {t!r} is already registered to {table[t]!r}; pass overwrite=True to replace")
    for t in targets:
        table[t] = factory
    return factory


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for mod in _BUILTIN_MODULES:
            importlib.import_module(mod)


def _plugin_entry_points() -> dict[str, EntryPoint]:
    global _entry_points
    if _entry_points is None:
        _entry_points = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return _entry_points


def _resolve(name: str) -> Factory | None:
    _load_builtins()
    if name in _exact:
        return _exact[name]
    for pattern, factory in _patterns.items():
        if fnmatch.fnmatchcase(name, pattern):
            return factory
    eps = _plugin_entry_points()
    for ep_name, ep in eps.items():
        matched = ep_name == name or (_is_pattern(ep_name) and fnmatch.fnmatchcase(name, ep_name))
        if not matched and ep_name.rpartition("_")[2] not in MODES and not _is_pattern(ep_name):
            matched = name in (f"{ep_name}_{m}" for m in MODES)
        if matched:
            factory = ep.load()  # a broken plugin fails here, loudly, only when it is asked for
            register_detector(ep_name, factory, overwrite=True)
            return factory
    return None


def list_detectors(include_patterns: bool = False) -> list[str]:
    """Sorted concrete detector names (plus family patterns such as 'timm:*' if include_patterns)."""
    _load_builtins()
    names = set(_exact)
    for ep_name in _plugin_entry_points():
        if _is_pattern(ep_name):
            if include_patterns:
                names.add(ep_name)
        elif ep_name.rpartition("_")[2] in MODES:
            names.add(ep_name)
        else:
            names.update(f"{ep_name}_{m}" for m in MODES)
    if include_patterns:
        names.update(_patterns)
    return sorted(names)


def closest_names(name: str, candidates: list[str], n: int = 5) -> list[str]:
    """Closest candidates by difflib ratio (case-insensitive), best first."""
    lowered = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.4)
    return [lowered[f] for f in found]


def check_name(name: str) -> Factory:
    """The factory for ``name``, or UnknownDetectorError listing the closest names (nothing is built).

    Names served by a pattern (timm:*, torchvision:*, openclip:*) are checked against their library by the
    factory itself when it runs.
    """
    factory = _resolve(name)
    if factory is None:
        candidates = list_detectors(include_patterns=True)
        suggestions = closest_names(name, candidates)
        families = ", ".join(sorted(_patterns)) or "none"
        no_mode = "" if name.rpartition("_")[2] in MODES else " Names end with _probe or _tune."
        raise UnknownDetectorError(
            f"unknown detector {name!r}.{no_mode} Closest known names: {suggestions or 'none'}. "
            f"Families by pattern: {families}. See list_detectors() for all names.",
            name,
            suggestions,
        )
    return factory


def create_detector(name: str, pretrained: str = "default", **kwargs) -> Detector:
    """Build detector ``name``; ``pretrained`` is 'default', a hub tag, a local weight file, or 'none'."""
    factory = check_name(name)
    detector = factory(name, pretrained=pretrained, **kwargs)
    if not isinstance(detector, Detector):
        raise TypeError(f"factory {factory!r} for {name!r} returned {type(detector).__name__}, not a Detector")
    return detector
