"""AI-GenBench's baseline training augmentation, reproduced with the libraries' own classes: ``aigenbench-baseline``.

The reference (``make_baseline_train_aug`` behind ``mandatory_train_preprocessing``) has two parts.

Deterministic part, seeded per *position in the window's training subset*: copy c of the row at position p uses
seed ``(base + c·2^27) mod 2^31 + p`` (base 4321), set on the global torch, NumPy, Python and OpenCV generators and,
through ``set_random_seed``, on the albumentations transforms' own generators. In order:
  1. crop to at most 1080×1080 at a random position (torch ``randint``: left, then top) when a side is larger;
  2. torchvision v2 ``RandomApply([RandomResizedCrop(256, scale=(0.08, 1), ratio=(3/4, 4/3), bilinear)], p=0.2)``;
  3. ``RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)``; 4. ``RandomGrayscale(p=0.2)``;
  5. albumentations ``CoarseDropout(num_holes_range=(1, 1), hole_height_range=(1, 48), hole_width_range=(1, 48),
     fill=128, p=0.2)``; 6. albumentations ``GaussNoise(p=0.2)`` (its library-default std range);
  7. ``RandomApply`` p 0.5: Gaussian blur, σ = U[0, 3] from Python ``random``, SciPy ``gaussian_filter`` per channel;
  8. ``RandomApply`` p 0.5: JPEG via OpenCV or Pillow (``random.choice``), quality ``random.choice(30..100)``.
Between steps the reference converts as its ComposeMixedAugmentations does: albumentations take NumPy uint8
(a tensor becomes ``(x·255).astype(uint8)``, truncating), their NumPy output becomes a float tensor ``to_tensor``;
the blur and JPEG lambdas return the type they were given. The albumentations and torchvision classes are used as
they are (their draws are not re-implemented), so the copies equal the reference's for the same library versions
(tests/data/model_input_golden.npz, made by the reference's own code).

Non-deterministic part (``rot90`` with expand, horizontal flip, ``Resize((S, S))`` bilinear, ToImage, ToDtype): the
reference draws it from an unseeded generator in every DataLoader worker, so no run repeats it. Here it draws from a
generator seeded by (run seed, window, position, copy): the same transforms and distributions, reproducible.
Normalisation is left to the detector module (``eval.normalize``; CLIP statistics under the reference pipeline).

Keying by position (not by sample id, DESIGN §3.4) means a sample's copies change from window to window (its
position in the cumulative subset moves), so these copies are streamed in every window, never cached.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

NAME = "aigenbench-baseline"
DEFAULT_BASE_SEED = 4321
SEED_SHIFT = 2**27  # PreAugmentedDataset's seed_shift between copies
MAX_SEED = 2**31  # RNGManager rejects seeds outside [0, 2^31)
MAX_SIDE = 1080  # maximum_processing_size
JPEG_QUALITIES = list(range(30, 101))
BLUR_SIGMA = (0.0, 3.0)


def deterministic_seed(base_seed: int, position: int, copy: int) -> int:
    """The reference's seed of copy `copy` of the row at `position`: (base + copy·2^27) mod 2^31 + position."""
    seed = (int(base_seed) + int(copy) * SEED_SHIFT) % MAX_SEED + int(position)
    if not 0 <= seed < MAX_SEED:
        raise ValueError(f"aigenbench-baseline: seed {seed} of position {position}, copy {copy} is outside [0, 2^31) "
                         "(the reference's RNG limit)")
    return seed


@contextlib.contextmanager
def global_rngs(seed: int) -> Iterator[None]:
    """Seed the global torch (CPU), NumPy, Python and OpenCV generators as the reference's RNGManager does, and put
    the first three back afterwards (OpenCV's state cannot be read; the degradations re-seed it when they use it)."""
    import cv2

    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.manual_seed(seed)
    cv2.setRNGSeed(seed)
    np.random.seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


# -- the reference's type conversions (ComposeMixedAugmentations, augmentation_utils) -------------------------------
def _to_numpy(img) -> np.ndarray:
    if isinstance(img, Image.Image):
        return np.array(img)
    if isinstance(img, torch.Tensor):
        return (img.permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)  # truncation, as the reference
    return img


def _to_tensor(img) -> torch.Tensor:
    from torchvision.transforms.functional import to_tensor

    if isinstance(img, torch.Tensor):
        return img
    arr = np.asarray(img)
    return to_tensor(arr if arr.flags.writeable else arr.copy())


def _like(arr: np.ndarray, template):
    """A NumPy result back in the type of `template` (the lambdas' ``_image_to_format``)."""
    if isinstance(template, Image.Image):
        return Image.fromarray(arr)
    if isinstance(template, torch.Tensor):
        return _to_tensor(arr)
    return arr


def _blur(img):
    from scipy.ndimage import gaussian_filter

    arr = _to_numpy(img)
    arr = arr.copy() if not arr.flags.writeable else arr
    sigma = random.random() * (BLUR_SIGMA[1] - BLUR_SIGMA[0]) + BLUR_SIGMA[0]
    for c in range(3):
        gaussian_filter(arr[:, :, c], output=arr[:, :, c], sigma=sigma)
    return _like(arr, img)


def _jpeg(img):
    from benchmark.degradations import JPEG_BACKENDS, jpeg_roundtrip

    arr = np.ascontiguousarray(_to_numpy(img))
    backend = random.choice(list(JPEG_BACKENDS))
    quality = random.choice(JPEG_QUALITIES)
    return _like(jpeg_roundtrip(arr, backend, quality), img)


def _crop_if_large(img):
    """RandomCropIfLarge((1080, 1080)) at training time: a random window (torch randint, left then top)."""
    from torchvision.transforms.v2 import functional as F

    height, width = F.get_size(img)
    if width <= MAX_SIDE and height <= MAX_SIDE:
        return img
    crop_w, crop_h = min(width, MAX_SIDE), min(height, MAX_SIDE)
    max_x, max_y = width - crop_w, height - crop_h
    left = 0 if max_x <= 0 else int(torch.randint(0, max_x, (1,)).item())
    top = 0 if max_y <= 0 else int(torch.randint(0, max_y, (1,)).item())
    return F.crop(img, top, left, crop_h, crop_w)


@functools.cache
def _steps() -> tuple:
    """(transform, is_albumentations) of the deterministic part, built once per process."""
    import torchvision.transforms.v2 as T
    from albumentations import CoarseDropout, GaussNoise

    return (
        (T.RandomApply([T.RandomResizedCrop(size=256, scale=(0.08, 1.0), ratio=(0.75, 1.0 / 0.75),
                                            interpolation=T.InterpolationMode.BILINEAR)], p=0.2), False),
        (T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), False),
        (T.RandomGrayscale(p=0.2), False),
        (CoarseDropout(num_holes_range=(1, 1), hole_height_range=(1, 48), hole_width_range=(1, 48), fill=128,
                       p=0.2), True),
        (GaussNoise(p=0.2), True),
        (T.RandomApply([T.Lambda(_blur)], p=0.5), False),
        (T.RandomApply([T.Lambda(_jpeg)], p=0.5), False),
    )


STEP_NAMES = ("crop_if_large", "random_resized_crop", "color_jitter", "grayscale", "coarse_dropout", "gauss_noise",
              "blur", "jpeg")


def _changed(before, after) -> bool:
    a, b = _to_tensor(before), _to_tensor(after)
    return a.shape != b.shape or not torch.equal(a.to(torch.float32), b.to(torch.float32))


def deterministic_copy(image: np.ndarray | Image.Image, position: int, copy: int,
                       base_seed: int = DEFAULT_BASE_SEED, trace: list | None = None) -> torch.Tensor:
    """The deterministic part for one copy of a decoded RGB image: a float32 CHW tensor of k/255 values.

    `trace`, if given, receives the names of the steps that changed the image (STEP_NAMES; for tests and
    `genshift data`-style inspection)."""
    seed = deterministic_seed(base_seed, position, copy)
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))
    steps = _steps()
    with global_rngs(seed):
        for t, is_alb in steps:
            if is_alb:
                t.set_random_seed(seed)
        before, img = img, _crop_if_large(img)
        if trace is not None and _changed(before, img):
            trace.append(STEP_NAMES[0])
        for name, (t, is_alb) in zip(STEP_NAMES[1:], steps, strict=True):
            before = img
            img = t(image=_to_numpy(img))["image"] if is_alb else t(img)
            if isinstance(img, np.ndarray):
                img = _to_tensor(img)
            if trace is not None and _changed(before, img):
                trace.append(name)
    return _to_tensor(img).to(torch.float32)


@functools.lru_cache(maxsize=8)
def _post(size: int):
    import torchvision.transforms.v2 as T
    from torchvision.transforms.v2 import functional as F

    def rot90(img):
        return F.rotate(img, random.choice([0, 90, 180, 270]), expand=True)

    return T.Compose([T.RandomApply([T.Lambda(rot90)], p=1.0), T.RandomHorizontalFlip(),
                      T.Resize(size=(size, size), interpolation=T.InterpolationMode.BILINEAR),
                      T.ToImage(), T.ToDtype(torch.float32, scale=True)])


def post_seed(run_seed: int, window: int, position: int, copy: int) -> int:
    """The seed of the non-deterministic part of one copy (genshift's choice: the reference leaves it unseeded)."""
    return int(np.random.SeedSequence([int(run_seed), int(window), int(position), int(copy)]).generate_state(1)[0]
               % MAX_SEED)


def training_copy(image: np.ndarray, position: int, copy: int, size: int, run_seed: int, window: int,
                  base_seed: int = DEFAULT_BASE_SEED) -> torch.Tensor:
    """One aigenbench-baseline training copy: float32 3×S×S in [0, 1], before normalisation."""
    x = deterministic_copy(image, position, copy, base_seed)
    with global_rngs(post_seed(run_seed, window, position, copy)):
        out = _post(int(size))(x)
    return out.as_subclass(torch.Tensor).contiguous()


__all__ = ["NAME", "DEFAULT_BASE_SEED", "deterministic_seed", "deterministic_copy", "training_copy", "post_seed",
           "global_rngs"]
