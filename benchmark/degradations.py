"""Mandatory evaluation degradations (DESIGN §3.6), seeded by the eval position.

Every eval image goes through the same 7-step chain before the detector's own
resize/crop: crop-if-large, grayscale (p 0.1), JPEG (p 0.5), Gaussian noise
(p 0.3), JPEG (p 0.2), square random-resized crop (p 0.25), JPEG (p 0.1).
Sample ``position`` uses seed ``base_seed + position`` (reference: 4321 + index).

Profile ``aigenbench-v1`` reproduces AI-GenBench's ``mandatory_val_preprocessing``
(``lightning_data_modules/ai_genbench_pipeline.py`` driven by
``dataset_loading/fixed_augmentations``) step by step, with the same random-number
families consumed in the same order, so that for the same decoded image, position
and library versions the pixels are identical (checked against hashes produced by
running the reference code itself, ``tests/data/degradations_golden.json``).
Reference behaviour reproduced on purpose (quirks included):

- Seeding: the reference seeds the *global* torch CPU, CUDA, OpenCV, NumPy and
  Python ``random`` generators with ``seed`` and calls ``set_random_seed(seed)`` on
  the albumentations ``GaussNoise`` (private ``random.Random`` + NumPy Generator).
  Only three families are consumed: torch CPU (crop offsets, every p-gate,
  RandomResizedCrop box), Python ``random`` (JPEG backend and quality, RRC size and
  interpolation) and the GaussNoise private generators (gate, sigma, then an
  OpenCV seed for ``cv2.randn``).  The global NumPy generator is never consumed.
  We use a private ``torch.Generator`` and ``random.Random`` seeded the same way
  (same streams as the seeded globals) and leave the caller's global state alone,
  except OpenCV's global RNG, which albumentations itself re-seeds for the noise.
- Consumption order: torch ``randint`` crop left, crop top (each only when that
  side is larger than 1080), then torch ``rand(1)`` gates for grayscale, JPEG 1,
  JPEG 2, RRC (+ its box draws: uniform scale, uniform log-ratio, ..., randint top,
  randint left), JPEG 3.  A gate fires when ``rand < p`` (``rand >= p`` skips).
- Crop-if-large: ``force_central_crop=True`` is stored but never passed on by
  ``make_params``, so the crop is at a *random* position ``left ~ randint(0, w-1080)``,
  ``top ~ randint(0, h-1080)`` (exclusive upper bound: the last offset is never
  chosen; a side of exactly 1081 still consumes a draw that is always 0).
- JPEG (``data_augment_cmp``): backend ``random.choice(["cv2", "pil"])`` then quality
  ``random.choice([50, 101])``: only two qualities, and 101 is clamped to 100 by both
  OpenCV (with a warning) and libjpeg via Pillow (verified byte-identical), so we
  encode with 100 and record ``quality_drawn=101``.  OpenCV path: RGB->BGR,
  ``imencode``/``imdecode(IMREAD_COLOR)``, BGR->RGB; Pillow path: save/open in memory.
- Gaussian noise: albumentations ``GaussNoise(std_range=(0.015, 0.075), p=0.3)`` is
  used as is (its semantics change between versions).  In albumentations 2.0.x:
  sigma uniform in [0.015, 0.075]*255, per-pixel-per-channel ``cv2.randn`` noise,
  noise *truncated toward zero*, added in float and clipped to [0, 255] (no
  wrap-around at this step, contrary to DESIGN's summary).
- After the noise step the reference always carries a float tensor ``x = u8/255``;
  JPEG steps convert it back with ``(x*255).astype(uint8)``.  This is exact for
  such values, but after a bilinear/bicubic RRC the tensor holds arbitrary floats
  (bicubic overshoots [0, 1]) and that conversion *truncates and wraps around*
  (e.g. -0.3 -> 0, -1.2 -> 255, 256.4 -> 0): reproduced for JPEG 3.
- RandomResizedCropVariable: ``random.randint(256, 512)`` size, then
  ``random.choice([BILINEAR, BICUBIC, LANCZOS])``, then torchvision v1
  ``RandomResizedCrop(scale=(0.5, 1), ratio=(0.9, 1/0.9))`` box draws.  Bilinear and
  bicubic resize the float tensor (antialias=True, no clamping); LANCZOS first
  converts to PIL with ``mul(255).byte()`` (truncation) and resizes with Pillow.
- Grayscale: Pillow ``convert("L")`` (ITU-R 601-2 luma, fixed point) replicated to
  3 channels, as torchvision does for PIL input.

Unavoidable difference: when the RRC fires with bilinear/bicubic and JPEG 3 does
not, the reference hands the detector a float tensor (values may lie outside
[0, 1]); this API returns uint8, so that tensor is rounded and clipped
(``quantized_float_output`` in the RRC record).  The golden hashes apply the same
rounding to the reference output.  ``degrade_float`` returns that tensor exactly (float32 CHW), for
callers that can take a float image (``genshift data degrade``).

Profile ``fixed``: central crop, JPEG quality ``random.randint(50, 100)``, noise
``clip(rint(img + N(0, sigma)))`` with NumPy ``default_rng(seed)``, and rounding
with clipping wherever a float image becomes uint8; otherwise the same steps.

Re-encoding profiles ``<profile>+reencode<Q>`` (e.g. ``aigenbench-v1+reencode95``): every eval image is first
encoded as JPEG at quality Q with Pillow (libjpeg's IJG tables, 4:2:0, baseline) and decoded, then the profile's
chain runs as usual with the same seeds (the re-encoding draws nothing). Every eval image then reaches the chain
as the same kind of file, whatever its source format: what a detector can still tell apart is not the container
(docs/formats.md). The step records then start with ``reencode``.
"""

from __future__ import annotations

import functools
import io
import math
import os
import random
import threading
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from benchmark.formats import DEFAULT_BASE_SEED, DegradationProfile, parse_profile

# albumentations asks PyPI for a newer version on import (2 s timeout): in every cache worker, on every
# offline compute node. The harness never wants that; a user's explicit setting is kept.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

PROFILES = tuple(DegradationProfile)
DEGRADATIONS_VERSION = 1  # bump when the chain's code changes the pixels

MAX_SIDE = 1080
P_GRAYSCALE, P_JPEG_1, P_NOISE, P_JPEG_2, P_RRC, P_JPEG_3 = 0.1, 0.5, 0.3, 0.2, 0.25, 0.1
JPEG_BACKENDS = ("cv2", "pil")
REFERENCE_QUALITIES = (50, 101)
FIXED_QUALITY_RANGE = (50, 100)
NOISE_STD_RANGE = (0.015, 0.075)
RRC_SIZE_RANGE = (256, 512)
RRC_SCALE = (0.5, 1.0)
RRC_RATIO = (0.9, 1 / 0.9)
RRC_INTERPOLATIONS = (InterpolationMode.BILINEAR, InterpolationMode.BICUBIC, InterpolationMode.LANCZOS)
_MAX_SEED = 2**31  # the reference rejects seeds outside [0, 2^31) (OpenCV limit)
_thread_local = threading.local()


def _check_profile(profile: str) -> tuple[DegradationProfile, int | None]:
    """(base profile, re-encoding quality or None) of a profile name; ValueError naming the valid ones."""
    return parse_profile(profile)


class _Chain:
    """State of one degradation run: the image and the seeded generators."""

    def __init__(self, image: np.ndarray, seed: int, profile: DegradationProfile):
        self.profile = profile
        self.seed = seed
        self.torch_rng = torch.Generator(device="cpu").manual_seed(seed)
        self.py_rng = random.Random(seed)
        # uint8 HWC array, or float32 CHW tensor once a bilinear/bicubic RRC has run.
        self.img: np.ndarray | torch.Tensor = image
        # The reference carries a PIL image from its LANCZOS random-resized crop on (a later JPEG keeps PIL).
        self.pil_output = False
        self.records: list[dict[str, Any]] = []

    # -- helpers -------------------------------------------------------------------------------
    def gate(self, p: float) -> bool:
        """torchvision RandomApply/RandomGrayscale gate: skip when rand(1) >= p."""
        return not bool(torch.rand(1, generator=self.torch_rng) >= p)

    def as_uint8(self) -> np.ndarray:
        """Current image as uint8 HWC (the reference's tensor->numpy conversion)."""
        if isinstance(self.img, np.ndarray):
            return self.img
        scaled = self.img.permute(1, 2, 0).numpy() * 255.0
        if self.profile.repairs_reference:
            return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        with np.errstate(invalid="ignore", over="ignore"):
            return scaled.astype(np.uint8)  # truncation, wrap-around out of range (reference quirk)

    # -- steps ---------------------------------------------------------------------------------
    def crop_if_large(self) -> None:
        img = self.img
        assert isinstance(img, np.ndarray)
        height, width = img.shape[:2]
        if width <= MAX_SIDE and height <= MAX_SIDE:
            self.records.append({"step": "crop_if_large", "fired": False})
            return
        crop_w, crop_h = min(width, MAX_SIDE), min(height, MAX_SIDE)
        max_x, max_y = width - crop_w, height - crop_h
        if self.profile.repairs_reference:
            left, top = max_x // 2, max_y // 2
        else:
            left = 0 if max_x <= 0 else int(torch.randint(0, max_x, (1,), generator=self.torch_rng).item())
            top = 0 if max_y <= 0 else int(torch.randint(0, max_y, (1,), generator=self.torch_rng).item())
        self.img = img[top : top + crop_h, left : left + crop_w]
        self.records.append(
            {
                "step": "crop_if_large",
                "fired": True,
                "top": top,
                "left": left,
                "height": crop_h,
                "width": crop_w,
            }
        )

    def grayscale(self) -> None:
        if not self.gate(P_GRAYSCALE):
            self.records.append({"step": "grayscale", "fired": False})
            return
        luma = np.asarray(Image.fromarray(np.ascontiguousarray(self.as_uint8())).convert("L"))
        self.img = np.dstack([luma, luma, luma])
        self.records.append({"step": "grayscale", "fired": True})

    def jpeg(self, name: str, p: float) -> None:
        if not self.gate(p):
            self.records.append({"step": name, "fired": False})
            return
        backend = self.py_rng.choice(JPEG_BACKENDS)
        record: dict[str, Any] = {"step": name, "fired": True, "backend": backend}
        if self.profile.repairs_reference:
            quality = self.py_rng.randint(*FIXED_QUALITY_RANGE)
        else:
            drawn = self.py_rng.choice(REFERENCE_QUALITIES)
            quality = min(drawn, 100)  # both encoders clamp 101 to 100 (byte-identical)
            record["quality_drawn"] = drawn
        record["quality"] = quality
        self.img = jpeg_roundtrip(np.ascontiguousarray(self.as_uint8()), backend, quality)
        self.records.append(record)

    def noise(self) -> None:
        image = np.ascontiguousarray(self.as_uint8())
        if self.profile.repairs_reference:
            gate_rng = random.Random(self.seed)
            if not gate_rng.random() < P_NOISE:
                self.records.append({"step": "noise", "fired": False})
                return
            sigma = gate_rng.uniform(*NOISE_STD_RANGE)
            noise = np.random.default_rng(self.seed).normal(0.0, sigma * 255.0, size=image.shape)
            self.img = np.clip(np.rint(image.astype(np.float64) + noise), 0, 255).astype(np.uint8)
            self.records.append({"step": "noise", "fired": True, "sigma": sigma, "sigma_255": sigma * 255.0})
            return
        fired, sigma, out = _albumentations_gauss_noise(image, self.seed)
        self.img = out
        if fired:
            self.records.append({"step": "noise", "fired": True, "sigma": sigma, "sigma_255": sigma * 255.0})
        else:
            self.records.append({"step": "noise", "fired": False})

    def random_resized_crop(self) -> None:
        if not self.gate(P_RRC):
            self.records.append({"step": "random_resized_crop", "fired": False})
            return
        size = self.py_rng.randint(*RRC_SIZE_RANGE)
        interpolation = self.py_rng.choice(RRC_INTERPOLATIONS)
        image = self.as_uint8()
        height, width = image.shape[:2]
        top, left, box_h, box_w = _rrc_box(height, width, self.torch_rng)
        record: dict[str, Any] = {
            "step": "random_resized_crop",
            "fired": True,
            "size": size,
            "interpolation": interpolation.value,
            "top": top,
            "left": left,
            "height": box_h,
            "width": box_w,
        }
        if interpolation == InterpolationMode.LANCZOS:
            pil = Image.fromarray(np.ascontiguousarray(image))
            out = TF.resized_crop(pil, top, left, box_h, box_w, [size, size], interpolation, antialias=True)
            self.img = np.asarray(out, dtype=np.uint8)
            self.pil_output = True
        else:
            tensor = (
                torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(torch.float32).div(255)
            )
            self.img = TF.resized_crop(
                tensor, top, left, box_h, box_w, [size, size], interpolation, antialias=True
            )
        self.records.append(record)

    def finish(self) -> np.ndarray:
        if isinstance(self.img, torch.Tensor):
            # The reference passes this float tensor on; a uint8 API has to round it.
            scaled = self.img.permute(1, 2, 0).numpy() * 255.0
            out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
            for record in self.records:
                if record["step"] == "random_resized_crop":
                    record["quantized_float_output"] = True
            return np.ascontiguousarray(out)
        return np.ascontiguousarray(self.img)


def jpeg_roundtrip(image: np.ndarray, backend: str, quality: int) -> np.ndarray:
    """Encode and decode an RGB uint8 image as JPEG with OpenCV or Pillow (reference cv2_jpg/pil_jpg)."""
    if backend == "cv2":
        ok, encoded = cv2.imencode(".jpg", image[:, :, ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), quality])
        if not ok:
            raise RuntimeError(
                f"OpenCV failed to JPEG-encode an image of shape {image.shape} at quality {quality}"
            )
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
        return np.ascontiguousarray(decoded[:, :, ::-1])
    if backend == "pil":
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="jpeg", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            return np.array(decoded)
    raise ValueError(f"unknown JPEG backend {backend!r}; valid: {JPEG_BACKENDS}")


def _albumentations_gauss_noise(image: np.ndarray, seed: int) -> tuple[bool, float | None, np.ndarray]:
    """Run albumentations GaussNoise exactly as the reference does; return (fired, sigma, image)."""
    transform = getattr(_thread_local, "gauss_noise", None)
    if transform is None:  # building it validates with pydantic (~1 ms); one per thread, re-seeded per call
        from albumentations import GaussNoise

        transform = _thread_local.gauss_noise = GaussNoise(std_range=NOISE_STD_RANGE, p=P_NOISE)
    transform.set_random_seed(seed)
    out = transform(image=image)["image"]
    fired = bool(transform.get_applied_params())
    # GaussNoise does not report sigma; replay its private python stream (gate, then sigma).
    replay = random.Random(seed)
    replay_fired = replay.random() < P_NOISE
    if replay_fired != fired:
        import albumentations

        raise RuntimeError(
            f"albumentations {albumentations.__version__} GaussNoise no longer draws its gate from "
            "random.Random(seed).random(); update benchmark/degradations.py (noise record) "
            "and regenerate the golden data"
        )
    sigma = replay.uniform(*NOISE_STD_RANGE) if fired else None
    if out.dtype != np.uint8 or out.shape != image.shape:
        raise RuntimeError(f"GaussNoise returned {out.dtype} {out.shape} for uint8 input {image.shape}")
    return fired, sigma, out


def _rrc_box(height: int, width: int, gen: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision v1 RandomResizedCrop.get_params with an explicit generator (same draws, same order)."""
    area = height * width
    log_ratio = torch.log(torch.tensor(RRC_RATIO))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(RRC_SCALE[0], RRC_SCALE[1], generator=gen).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=gen)).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, size=(1,), generator=gen).item())
            j = int(torch.randint(0, width - w + 1, size=(1,), generator=gen).item())
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(RRC_RATIO):
        w = width
        h = int(round(w / min(RRC_RATIO)))
    elif in_ratio > max(RRC_RATIO):
        h = height
        w = int(round(h * max(RRC_RATIO)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _run_chain(image: np.ndarray, position: int, profile: str, base_seed: int) -> _Chain:
    """Validate the inputs and run the 7 steps; the chain holds the final image and the step records."""
    base, reencode = _check_profile(profile)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(
            f"degrade() needs a uint8 HxWx3 RGB array, got {desc}; convert the decoded image to RGB first"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"degrade() got an empty image of shape {image.shape}")
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or position < 0:
        raise ValueError(f"position must be a non-negative int, got {position!r}")
    seed = int(base_seed) + int(position)
    if not 0 <= seed < _MAX_SEED:
        raise ValueError(f"seed base_seed+position = {seed} is outside [0, 2^31) (the reference's RNG limit)")

    chain = _Chain(image, seed, base)
    if reencode is not None:
        chain.img = jpeg_roundtrip(np.ascontiguousarray(image), "pil", reencode)
        chain.records.append({"step": "reencode", "fired": True, "backend": "pil", "quality": reencode})
    chain.crop_if_large()
    chain.grayscale()
    chain.jpeg("jpeg_1", P_JPEG_1)
    chain.noise()
    chain.jpeg("jpeg_2", P_JPEG_2)
    chain.random_resized_crop()
    chain.jpeg("jpeg_3", P_JPEG_3)
    return chain


def degrade(
    image: np.ndarray, position: int, profile: str = DegradationProfile.AIGENBENCH_V1.value, base_seed: int = DEFAULT_BASE_SEED
) -> tuple[np.ndarray, list[dict]]:
    """Apply the mandatory eval degradations to a uint8 HWC RGB image; return (image, step records)."""
    chain = _run_chain(image, position, profile, base_seed)
    out = chain.finish()
    if out is image or np.shares_memory(out, image):
        out = out.copy()
    return out, chain.records


def degrade_float(
    image: np.ndarray, position: int, profile: str = DegradationProfile.AIGENBENCH_V1.value, base_seed: int = DEFAULT_BASE_SEED
) -> tuple[np.ndarray, list[dict]]:
    """What the reference hands to the detector's resize/crop: float32 CHW, nominally in [0, 1].

    Same chain as `degrade`; a uint8 result becomes ``u8 / 255``, while the float tensor left by a
    bilinear/bicubic random-resized crop (no later JPEG) is returned exactly, without rounding or
    clipping (values may lie slightly outside [0, 1]; record ``float_output``).
    """
    chain = _run_chain(image, position, profile, base_seed)
    if isinstance(chain.img, torch.Tensor):
        for record in chain.records:
            if record["step"] == "random_resized_crop":
                record["float_output"] = True
        return np.ascontiguousarray(chain.img.numpy().astype(np.float32, copy=True)), chain.records
    u8 = np.ascontiguousarray(chain.img.transpose(2, 0, 1))
    return u8.astype(np.float32) / np.float32(255.0), chain.records


def degrade_reference(
    image: np.ndarray, position: int, profile: str = DegradationProfile.AIGENBENCH_V1.value, base_seed: int = DEFAULT_BASE_SEED
) -> tuple[Image.Image | torch.Tensor, list[dict]]:
    """The chain's output in the type the reference hands to the model's resize/crop (``make_val_crops``).

    The reference mixes libraries and converts between them: after the Gaussian-noise step (albumentations,
    NumPy in and out) every image is a float tensor ``to_tensor(u8)`` = u8/255; its LANCZOS random-resized crop
    leaves a PIL image (a later JPEG keeps PIL); a bilinear/bicubic one leaves arbitrary floats. So the result
    is a PIL RGB image (record ``output_type: pil``) or a float32 CHW tensor (``tensor``); a uint8 array never
    reaches the crop. `benchmark.model_input` applies the reference's torchvision v2 resize/crop to it.
    """
    chain = _run_chain(image, position, profile, base_seed)
    if isinstance(chain.img, torch.Tensor):
        out: Image.Image | torch.Tensor = chain.img.to(torch.float32)
    elif chain.pil_output:
        out = Image.fromarray(np.ascontiguousarray(chain.img))
    else:  # torchvision's to_tensor: the reference's numpy -> torch conversion (from_numpy, CHW, .div(255))
        img = chain.img if chain.img.flags.writeable else chain.img.copy()  # torch wants writable memory
        out = TF.to_tensor(np.ascontiguousarray(img))
    chain.records.append({"step": "output", "fired": True,
                          "output_type": "pil" if isinstance(out, Image.Image) else "tensor"})
    return out, chain.records


@functools.lru_cache(maxsize=1)
def _library_versions() -> dict[str, str]:
    # albumentations' versions from the installed metadata: importing it only to read them costs ~1 s.
    from importlib.metadata import version

    import PIL
    import torchvision
    from PIL import features

    cv2_jpeg = [ln.split(":", 1)[1].strip() for ln in cv2.getBuildInformation().splitlines() if "JPEG:" in ln]
    return {
        "numpy": np.__version__,
        "Pillow": PIL.__version__,
        "Pillow-libjpeg": f"{features.version_codec('jpg')} "
        f"turbo {features.version_feature('libjpeg_turbo')}",
        "opencv": cv2.__version__,
        "opencv-libjpeg": cv2_jpeg[0] if cv2_jpeg else "unknown",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "albumentations": version("albumentations"),
        "albucore": version("albucore"),
    }


def degradation_key(profile: str, base_seed: int = DEFAULT_BASE_SEED) -> dict:
    """What identifies degrade() outputs for a profile: name, seed base, code and library versions."""
    base, _ = _check_profile(profile)
    versions = dict(_library_versions())
    if not base.uses_albumentations:
        versions.pop("albumentations")
        versions.pop("albucore")
    return {
        "profile": profile,
        "base_seed": int(base_seed),
        "degradations_version": DEGRADATIONS_VERSION,
        "versions": versions,
    }


__all__ = ["PROFILES", "DEFAULT_BASE_SEED", "degrade", "degrade_float", "degrade_reference", "degradation_key"]
