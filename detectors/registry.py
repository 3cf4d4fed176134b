"""Name -> factory registry for detectors (modelled on timm's register_model/create_model).

Names are ``<backbone>_<probe|tune>``; patterns (fnmatch, e.g. ``timm:*``) route whole families to one factory.
Plugins register under the entry-point group ``genshift.detectors`` (entry-point name = detector name or
pattern, value = factory). A factory is called as ``factory(name, pretrained=..., **kwargs)`` and its own
exceptions propagate unchanged.

This module is import-light on purpose: built-in families are served from ``builtins.BUILTINS`` and plugins
from their entry-point metadata, so ``check_name`` imports neither torch, a model library nor a plugin module.
A registration may declare its detector's metadata (``builtins.DeclaredMeta``; every named built-in does), which
``declared_meta`` serves without building anything: the cache plan sizes a run's stores from it.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import re
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from .builtins import BUILTINS, DECLARED, LIBRARY_NAME_CHECKS, MODELESS, MODES, PATTERN_GRAMMAR, DeclaredMeta

if TYPE_CHECKING:
    from .base import Detector

Factory = Callable[..., "Detector"]
ENTRY_POINT_GROUP = "genshift.detectors"


class LazyFactory:
    """A factory named ``module:function``, imported on first use (how built-in families are registered)."""

    def __init__(self, target: str, family: str) -> None:
        module, sep, attr = target.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"lazy factory target must look like 'package.module:function', got {target!r}")
        self.target, self.family = target, family
        self._loaded: Factory | None = None

    def load(self) -> Factory:
        """The factory function itself (imports its module)."""
        if self._loaded is None:
            module, _, attr = self.target.partition(":")
            self._loaded = getattr(importlib.import_module(module), attr)
        return self._loaded

    def __call__(self, name: str, **kwargs: Any) -> Detector:
        return self.load()(name, **kwargs)

    def __repr__(self) -> str:
        return f"LazyFactory({self.target!r}, family={self.family!r})"


_exact: dict[str, Factory] = {}
_patterns: dict[str, Factory] = {}
_modeless: set[str] = set()  # exact names served without a _probe/_tune suffix (builtins.MODELESS)
_declared: dict[str, DeclaredMeta] = {}  # exact name -> the metadata its registration declared
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


def _target(factory: Factory) -> str | None:
    """'module:function' of a factory (a LazyFactory's target), to tell a re-registration from a conflict."""
    if isinstance(factory, LazyFactory):
        return factory.target
    module, qualname = getattr(factory, "__module__", None), getattr(factory, "__qualname__", None)
    return f"{module}:{qualname}" if module and qualname else None


def register_detector(name_or_pattern: str, factory: Factory, *, overwrite: bool = False,
                      modeless: bool = False, meta: DeclaredMeta | None = None) -> Factory:
    """Register ``factory`` for a full name, a backbone (registers both _probe and _tune) or an fnmatch pattern.

    ``modeless``: register ``name_or_pattern`` exactly as written, a detector without probe/tune modes (e.g.
    ``lrnet_g1``). ``meta``: what the built detector's metadata will say (input size and kind, feature size, eval
    resize, localization), so that a run's caches are planned without building it; not for a pattern.
    """
    if not callable(factory):
        raise TypeError(f"factory for {name_or_pattern!r} is not callable: {factory!r}")
    if modeless:
        if _is_pattern(name_or_pattern):
            raise ValueError(f"a modeless registration must be a full name, got the pattern {name_or_pattern!r}")
        targets, table = [name_or_pattern], _exact
    elif _is_pattern(name_or_pattern):
        targets, table = [name_or_pattern], _patterns
    elif name_or_pattern.rpartition("_")[2] in MODES:
        targets, table = [name_or_pattern], _exact
    else:
        targets, table = [f"{name_or_pattern}_{m}" for m in MODES], _exact
    if meta is not None and table is _patterns:
        raise ValueError(f"a pattern ({name_or_pattern!r}) serves many models: it cannot declare one's metadata")
    for t in targets:
        old = table.get(t)
        same = old is factory or (old is not None and _target(old) is not None and _target(old) == _target(factory))
        if old is not None and not same and not overwrite:
            raise ValueError(f"detector {t!r} is already registered to {old!r}; pass overwrite=True to replace")
    for t in targets:
        old = table.get(t)
        if meta is not None:
            _declared[t] = meta
        elif not (old is factory or (old is not None and _target(old) is not None and _target(old) == _target(factory))):
            _declared.pop(t, None)  # another factory: the old declaration no longer describes it
        table[t] = factory
    if modeless:
        _modeless.add(name_or_pattern)
    return factory


for _key, (_factory_target, _family) in BUILTINS.items():
    register_detector(_key, LazyFactory(_factory_target, _family), meta=DECLARED.get(_key))
for _key, (_factory_target, _family) in MODELESS.items():
    register_detector(_key, LazyFactory(_factory_target, _family), modeless=True, meta=DECLARED.get(_key))


def declared_meta(name: str) -> dict | None:
    """The metadata the registration of ``name`` declared, as DetectorMeta's fields (``name``, ``mode``,
    ``input_size``, ``input_kind``, ``feature_dim``, ``eval_resize``, ``has_localization``), or None when it
    declared none (family patterns, plugins' entry points). Builds and imports nothing."""
    meta = _declared.get(name)
    if meta is None or _exact.get(name) is None:
        return None
    mode = "tune" if name in _modeless else split_mode(name)[1]  # a modeless detector trains everything
    return {"name": name, "mode": mode, "input_size": meta.input_size, "input_kind": meta.input_kind,
            "feature_dim": meta.feature_dim, "eval_resize": meta.eval_resize,
            "has_localization": meta.has_localization}


def is_modeless(name: str) -> bool:
    """Whether ``name`` is a registered detector without probe/tune modes."""
    return name in _modeless


def _plugin_entry_points() -> dict[str, EntryPoint]:
    global _entry_points
    if _entry_points is None:
        _entry_points = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return _entry_points


def _entry_point_for(name: str) -> tuple[str, EntryPoint] | None:
    """(entry-point name, entry point) of the installed plugin serving ``name``, without importing the plugin."""
    for ep_name, ep in _plugin_entry_points().items():
        matched = ep_name == name or (_is_pattern(ep_name) and fnmatch.fnmatchcase(name, ep_name))
        if not matched and ep_name.rpartition("_")[2] not in MODES and not _is_pattern(ep_name):
            matched = name in (f"{ep_name}_{m}" for m in MODES)
        if matched:
            return ep_name, ep
    return None


def lookup(name: str) -> tuple[str, Factory | EntryPoint] | None:
    """(registration key, factory or unloaded entry point) serving ``name``, or None; imports nothing."""
    if name in _exact:
        return name, _exact[name]
    for pattern, factory in _patterns.items():
        if fnmatch.fnmatchcase(name, pattern):
            return pattern, factory
    return _entry_point_for(name)


def get_factory(name: str) -> Factory:
    """The callable factory for ``name`` (imports its module, or a plugin's, when it is first asked for)."""
    key, factory = _checked(name)
    if isinstance(factory, EntryPoint):
        loaded = factory.load()  # a broken plugin fails here, loudly, only when it is asked for
        register_detector(key, loaded, overwrite=True)
        return loaded
    return factory.load() if isinstance(factory, LazyFactory) else factory


def list_detectors(include_patterns: bool = False) -> list[str]:
    """Sorted concrete detector names (plus family patterns such as 'timm:*' if include_patterns)."""
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


def family_of(name: str) -> str | None:
    """Family of a built-in name without building it (None for plugins and runtime registrations)."""
    found = lookup(name)
    factory = found[1] if found else None
    return factory.family if isinstance(factory, LazyFactory) else None


def closest_names(name: str, candidates: list[str], n: int = 5) -> list[str]:
    """Closest candidates by difflib ratio (case-insensitive), best first."""
    lowered = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.4)
    return [lowered[f] for f in found]


def _prefix_suggestions(name: str, patterns: list[str]) -> list[str]:
    """'tim:resnet50_probe' -> ['timm:resnet50_probe']: the name with its unknown 'family:' prefix corrected."""
    prefix, sep, rest = name.partition(":")
    if not sep:
        return []
    prefixes = [p[:-1] for p in patterns if p.endswith(":*")]
    return [f"{p}{rest}" for p in closest_names(prefix + ":", prefixes, n=2)]


def _checked(name: str) -> tuple[str, Factory | EntryPoint]:
    """lookup(name), or UnknownDetectorError listing the closest names; also checks a family's name grammar."""
    found = lookup(name)
    if found is None:
        patterns = list_detectors(include_patterns=True)
        suggestions = _prefix_suggestions(name, patterns) + closest_names(name, patterns)
        suggestions = list(dict.fromkeys(suggestions))[:5]
        families = ", ".join(sorted(_patterns)) or "none"
        no_mode = "" if name.rpartition("_")[2] in MODES else \
            f" Names end with _probe or _tune (except {sorted(_modeless)})."
        raise UnknownDetectorError(
            f"unknown detector {name!r}.{no_mode} Closest known names: {suggestions or 'none'}. "
            f"Families by pattern: {families}. `genshift detectors list` shows every name.",
            name,
            suggestions,
        )
    key = found[0]
    grammar = PATTERN_GRAMMAR.get(key) if key in _patterns else None
    if grammar is not None and not re.fullmatch(grammar[0], name):
        raise UnknownDetectorError(f"detector name {name!r} does not follow its family's grammar {grammar[1]}",
                                   name)
    if name not in _modeless:
        split_mode(name)
    return found


def check_name(name: str, library: bool = False) -> None:
    """Raise UnknownDetectorError (closest names listed) unless ``name`` is served; builds nothing.

    Names served by a family pattern must follow its grammar (e.g. ``timm:<model>_<probe|tune>``); this check
    imports nothing. With ``library`` a built-in family's library (timm, torchvision, open_clip) is then asked
    whether the model and tag in the name exist, which imports it (seconds); the factory asks it anyway.
    """
    key, factory = _checked(name)
    builtin = BUILTINS.get(key)
    if library and builtin and isinstance(factory, LazyFactory) and factory.target == builtin[0]:
        target = LIBRARY_NAME_CHECKS.get(key)
        if target is not None:
            LazyFactory(target, builtin[1]).load()(name)


def init_seed_kwargs(name: str, seed: int) -> dict[str, int]:
    """``{"seed": seed}`` if ``name``'s factory seeds its own random init (SmallCNN family), else ``{}``.

    Other factories draw their random weights from torch's global RNG, which a run seeds with its seed first.
    A run records these arguments in each checkpoint.json ('detector_kwargs') so a probe's random backbone is
    rebuilt identically.
    """
    import inspect

    return {"seed": int(seed)} if "seed" in inspect.signature(get_factory(name)).parameters else {}


def create_detector(name: str, pretrained: str = "default", **kwargs: Any) -> Detector:
    """Build detector ``name``; ``pretrained`` is 'default', a hub tag, a local weight file, or 'none'."""
    from .base import Detector

    factory = get_factory(name)
    detector = factory(name, pretrained=pretrained, **kwargs)
    if not isinstance(detector, Detector):
        raise TypeError(f"factory {factory!r} for {name!r} returned {type(detector).__name__}, not a Detector")
    return detector
