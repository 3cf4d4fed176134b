"""Pretrained-weight sources: parse them, load local files strictly, and fail fast when a download is impossible.

A source is ``"none"`` (random init, only when asked), a local file (.pt/.pth/.bin/.safetensors) or a hub tag
(``"openai"``, a timm tag, a torchvision weights name). Nothing here ever falls back to random weights.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
OFFLINE_ENV_VARS = ("HF_HUB_OFFLINE", "GENSHIFT_OFFLINE")
_REACH_TIMEOUT_S = 5.0
_MAX_LISTED_KEYS = 25


class WeightsUnavailableError(RuntimeError):
    """The requested pretrained weights cannot be obtained here (not cached, no network, or offline mode)."""


class WeightsFileError(ValueError):
    """A weight file cannot be read as plain weights (damaged, not a weights file, or holding Python objects that
    are never unpickled); the message names the file and what to do."""


class WeightsMismatchError(RuntimeError):
    """A weight file does not fit the model: missing, unexpected or wrongly shaped keys (all listed)."""

    def __init__(self, message: str, missing: list[str], unexpected: list[str], mismatched: list[str]):
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched


@dataclass(frozen=True)
class Source:
    """A parsed ``pretrained`` value: kind is 'none', 'file' or 'tag'; value is the path or tag."""

    kind: str
    value: str

    def describe(self) -> str:
        """The string stored in DetectorMeta.pretrained."""
        return "none" if self.kind == "none" else self.value


def parse_source(pretrained: str | os.PathLike | None) -> Source:
    """Classify ``pretrained``; a path-like value that does not exist or has an unknown suffix is an error."""
    if pretrained is None:
        raise ValueError("pretrained=None is ambiguous; pass 'default', a hub tag, a file path, or 'none'")
    text = os.fspath(pretrained)
    if text.strip().lower() == "none":
        return Source("none", "none")
    looks_like_path = (
        isinstance(pretrained, os.PathLike)
        or os.sep in text
        or text.startswith(".")
        or text.lower().endswith(WEIGHT_SUFFIXES)
    )
    if not looks_like_path:
        return Source("tag", text)
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weight file not found: {path} (expected an existing file)")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ValueError(f"pretrained weight file {path} has suffix {path.suffix!r}; expected one of {WEIGHT_SUFFIXES}")
    return Source("file", str(path.resolve()))


def is_offline() -> bool:
    """True when the environment forbids network access (HF_HUB_OFFLINE or GENSHIFT_OFFLINE set truthy)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_ENV_VARS)


def _host_reachable(url: str, timeout: float = _REACH_TIMEOUT_S) -> str | None:
    """Try one TCP connection to the URL's host; return None if it works, else the reason."""
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    if host is None:
        return f"cannot parse host from {url!r}"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host}:{port} unreachable ({type(exc).__name__}: {exc})"


def ensure_downloadable(url: str, what: str, how_to_provide: str) -> None:
    """Raise WeightsUnavailableError at once if ``url`` cannot be downloaded (offline mode or host unreachable).

    Library download paths retry for tens of seconds without network; this check makes the failure immediate.
    """
    if is_offline():
        reason = "offline mode is set (" + ", ".join(f"{v}={os.environ.get(v)}" for v in OFFLINE_ENV_VARS
                                                    if os.environ.get(v)) + ")"
    else:
        reason = _host_reachable(url)
        if reason is None:
            return
    raise WeightsUnavailableError(
        f"cannot download {what}: {reason}. The file is not in the local cache.\n"
        f"Fetch it on a machine with network from:\n  {url}\n{how_to_provide}\n"
        "Random initialisation is never used in its place; pass pretrained='none' (--pretrained none) "
        "only if you really want untrained weights."
    )


def provide_hint(filename_hint: str, cache_hint: str) -> str:
    """Standard text telling the user how to hand a fetched file to genshift."""
    return (
        f"Then either pass it explicitly: --pretrained /path/to/{filename_hint} "
        f"(create_detector(name, pretrained='/path/to/{filename_hint}')),\n"
        f"or put it where the library looks for it: {cache_hint}"
    )


def hf_cached_file(repo_id: str, filenames: Iterable[str], revision: str | None = None) -> str | None:
    """Path of the first of ``filenames`` already in the Hugging Face cache for ``repo_id``, else None."""
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        found = try_to_load_from_cache(repo_id=repo_id, filename=name, revision=revision)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def hf_cache_hint(repo_id: str, filename: str) -> str:
    """How to place a hub file in the HF cache (the cache layout is not a plain folder)."""
    return (
        f"the Hugging Face cache ($HF_HOME/hub, default ~/.cache/huggingface/hub), e.g. by running "
        f"`huggingface-cli download {repo_id} {filename}` on a networked machine and copying that cache here"
    )


def torch_hub_cached_file(url: str) -> str | None:
    """Path of ``url`` in torch.hub's checkpoint cache if it is already there, else None."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    return str(path) if path.is_file() else None


def torch_hub_cache_hint(url: str) -> str:
    """Where torch.hub looks for a downloaded checkpoint."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    return f"{path} (torch.hub checkpoint cache; $TORCH_HOME moves it)"


# ----------------------------------------------------------------------------------------------- loading


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or a torch pickle (weights_only); unwrap one 'state_dict'/'model' level.

    The unwrap happens only when the top level is a dict whose sole tensor-dict entry is that key, so a plain
    state dict is never reinterpreted.
    """
    path = Path(path)
    obj = read_weights_file(path)
    if isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        for wrapper in ("state_dict", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and _is_tensor_dict(inner):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not _is_tensor_dict(obj):
        raise ValueError(
            f"{path} does not hold a state dict (str -> Tensor mapping, optionally under 'state_dict' or 'model'); "
            f"found {type(obj).__name__}"
        )
    return dict(obj)


def pickled_objects_error(path: Path | str, e: Exception) -> WeightsFileError:
    """The error for a torch pickle that `weights_only=True` refused, without torch's advice to load it unsafely."""
    found = re.search(r"(?:Unsupported global|GLOBAL|global): ?(?:GLOBAL )?([\w.]+)", str(e))
    what = f" ({found.group(1)})" if found else ""
    return WeightsFileError(
        f"{path}: holds Python objects{what}, not only tensors; genshift loads weights only as tensors and never "
        "unpickles other objects. Save the state dict alone (torch.save(model.state_dict(), ...)) or convert it "
        "to .safetensors")


def read_weights_file(path: Path) -> object:
    """The object in a .safetensors file or a torch pickle read with `weights_only=True` (tensors and plain
    containers only: a pickled class or function is refused, never called). Errors are WeightsFileError."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    if path.stat().st_size == 0:
        raise WeightsFileError(f"{path}: empty file (0 bytes), not a weights file")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's message advises weights_only=False: genshift never does that
        raise pickled_objects_error(path, e) from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        kind = "safetensors" if path.suffix.lower() == ".safetensors" else "torch"
        raise WeightsFileError(f"{path}: not a readable {kind} weights file ({type(e).__name__}: {first[:200]})") \
            from None
    except Exception as e:  # safetensors raises its own SafetensorError (not a subclass of the above)
        if type(e).__name__ != "SafetensorError":
            raise
        raise WeightsFileError(f"{path}: not a readable safetensors weights file ({e})") from None


def _is_tensor_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    more = f" ... and {len(keys) - _MAX_LISTED_KEYS} more" if len(keys) > _MAX_LISTED_KEYS else ""
    return f"[{shown}{more}]"


def check_keys(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], source: str, target: str
) -> None:
    """Raise WeightsMismatchError listing missing, unexpected and wrongly shaped keys of ``given``."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = sorted(
        f"{k}: file {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(given)
        if tuple(given[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = [f"weights from {source} do not match {target} "
                 f"({len(expected)} keys expected, {len(given)} given):"]
        if missing:
            parts.append(f"  missing keys ({len(missing)}): {_listed(missing)}")
        if unexpected:
            parts.append(f"  unexpected keys ({len(unexpected)}): {_listed(unexpected)}")
        if mismatched:
            parts.append(f"  shape mismatches ({len(mismatched)}): {_listed(mismatched)}")
        parts.append("  Check that the file belongs to this architecture, or convert its keys (see detectors/weights.py).")
        raise WeightsMismatchError("\n".join(parts), missing, unexpected, mismatched)


def load_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into ``module`` requiring exactly the same keys and shapes; list every difference."""
    check_keys(module.state_dict(), state_dict, source, type(module).__name__)
    module.load_state_dict(dict(state_dict), strict=True)


def drop_prefixed(state_dict: Mapping[str, torch.Tensor], prefixes: Iterable[str]) -> dict[str, torch.Tensor]:
    """Remove keys under the given module prefixes (used to discard a source model's own classifier)."""
    prefixes = tuple(p.rstrip(".") + "." for p in prefixes if p)
    return {k: v for k, v in state_dict.items() if not k.startswith(prefixes)}


# ------------------------------------------------------------------------------------------ key converters
# A converter maps a foreign checkpoint layout onto a library's layout. It is chosen explicitly by name, or
# automatically only when *every* key of the file matches the converter's signature; the result is still
# loaded strictly, so a wrong guess cannot pass silently.


@dataclass(frozen=True)
class KeyConverter:
    """A named, documented key mapping with a signature test over the whole key set."""

    name: str
    description: str
    matches: Callable[[list[str]], bool]
    convert: Callable[[dict[str, torch.Tensor], torch.nn.Module], dict[str, torch.Tensor]]


_EFFNET_PT_KEY = re.compile(r"^(_conv_stem|_bn0|_bn1|_conv_head|_fc|_blocks\.\d+\.\w+)\.\w+$")


def _efficientnet_pytorch_matches(keys: list[str]) -> bool:
    return any(k.startswith("_conv_stem.") for k in keys) and all(_EFFNET_PT_KEY.match(k) for k in keys)


def _efficientnet_pytorch_to_timm(sd: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """lukemelas/efficientnet_pytorch (and EfficientNet-Lite ports) layout -> timm EfficientNet layout.

    Top level: _conv_stem->conv_stem, _bn0->bn1, _conv_head->conv_head, _bn1->bn2, _fc->classifier.
    Blocks are numbered flat (_blocks.i) in the source and per stage (blocks.s.j) in timm; the flat order is
    taken from the timm model itself. Inside a block without expansion (timm DepthwiseSeparableConv):
    _depthwise_conv->conv_dw, _bn1->bn1, _project_conv->conv_pw, _bn2->bn2, _se_*->se.conv_*.
    With expansion (timm InvertedResidual): _expand_conv->conv_pw, _bn0->bn1, _depthwise_conv->conv_dw,
    _bn1->bn2, _project_conv->conv_pwl, _bn2->bn3, _se_reduce->se.conv_reduce, _se_expand->se.conv_expand.
    """
    flat_blocks: list[tuple[str, bool]] = []  # (timm prefix, has expansion)
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError(f"efficientnet_pytorch converter needs a timm EfficientNet (with .blocks); got {type(model)}")
    for s, stage in enumerate(blocks):
        for j, block in enumerate(stage):
            flat_blocks.append((f"blocks.{s}.{j}", hasattr(block, "conv_pwl")))
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    plain = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    expanded = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    se = {"_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            idx, sub, leaf = int(parts[1]), parts[2], parts[3]
            if idx >= len(flat_blocks):
                raise ValueError(f"key {key}: block {idx} does not exist; the timm model has {len(flat_blocks)} blocks")
            prefix, has_exp = flat_blocks[idx]
            table = {**(expanded if has_exp else plain), **se}
            if sub not in table:
                raise ValueError(f"key {key}: no timm equivalent for sub-module {sub!r} in block {prefix}")
            out[f"{prefix}.{table[sub]}.{leaf}"] = value
        else:
            out[f"{top[parts[0]]}.{parts[1]}"] = value
    return out


KEY_CONVERTERS: dict[str, KeyConverter] = {
    "efficientnet_pytorch": KeyConverter(
        "efficientnet_pytorch",
        "lukemelas efficientnet_pytorch / EfficientNet-Lite (_conv_stem, _blocks.N.*) -> timm efficientnet",
        _efficientnet_pytorch_matches,
        _efficientnet_pytorch_to_timm,
    ),
}


def convert_keys(
    state_dict: dict[str, torch.Tensor], model: torch.nn.Module, key_map: str | None
) -> tuple[dict[str, torch.Tensor], str | None]:
    """Apply converter ``key_map`` ('auto' picks one whose signature fits all keys; None/'none' keeps keys)."""
    if key_map in (None, "none"):
        return state_dict, None
    if key_map == "auto":
        keys = list(state_dict)
        for conv in KEY_CONVERTERS.values():
            if conv.matches(keys):
                return conv.convert(state_dict, model), conv.name
        return state_dict, None
    if key_map not in KEY_CONVERTERS:
        raise ValueError(f"unknown key_map {key_map!r}; known: {sorted(KEY_CONVERTERS)} or 'auto'/'none'")
    return KEY_CONVERTERS[key_map].convert(state_dict, model), key_map


DETECTOR_PREFIXES = ("backbone.", "head.")


def is_detector_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for a genshift Detector state dict (every key under 'backbone.' or 'head.')."""
    return len(state_dict) > 0 and all(k.startswith(DETECTOR_PREFIXES) for k in state_dict)


def unwrap_detector_checkpoint(state_dict: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """A genshift checkpoint used as backbone weights: keep 'backbone.*' (prefix removed), drop the head.

    Other state dicts pass through unchanged. A probe checkpoint (head only) has no backbone weights: error.
    """
    if not is_detector_checkpoint(state_dict):
        return state_dict
    backbone = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    if not backbone:
        raise WeightsMismatchError(
            f"{source} is a probe checkpoint: it holds only the linear head ({sorted(state_dict)}), no backbone "
            "weights. Rebuild the whole detector with detectors.load_detector_from_checkpoint(<window dir>), or "
            "pass the backbone's own weights (the probe's 'pretrained' source) instead.",
            [], sorted(state_dict), [],
        )
    return backbone


def load_file_into(
    module: torch.nn.Module,
    path: str,
    *,
    drop_prefixes: Iterable[str] = (),
    key_map: str | None = "auto",
    reference: torch.nn.Module | None = None,
    transform: Callable[[dict[str, torch.Tensor], torch.nn.Module], dict[str, torch.Tensor]] | None = None,
) -> str | None:
    """Read ``path``, convert keys if asked, drop the source's classifier prefixes, load strictly into ``module``.

    A genshift tune checkpoint (``backbone.*``/``head.*``) is unwrapped to its backbone first. ``reference`` is
    the model the converter inspects for layout (defaults to ``module``); ``transform`` is a family-specific
    last step ``transform(state_dict, reference)`` (e.g. timm's ViT filter resampling position embeddings). Returns the converter used, or None.
    """
    sd = unwrap_detector_checkpoint(load_state_dict_file(path), str(path))
    ref = reference if reference is not None else module
    sd, used = convert_keys(sd, ref, key_map)
    if transform is not None:
        sd = transform(sd, ref)
    sd = drop_prefixed(sd, drop_prefixes)
    how = f"{path}" + (f" (keys converted by '{used}')" if used else "")
    load_strict(module, sd, how)
    return used
