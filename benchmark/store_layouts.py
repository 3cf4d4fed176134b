"""The layouts (fields) of the pixel stores, import-light (numpy only): a run's cache plan sizes its stores with
them before torch or an image library is imported, and the stores' builders use the same functions, so the
estimate and the store cannot disagree."""

from __future__ import annotations

from benchmark.array_store import Field


def eval_fields(size: int) -> dict[str, Field]:
    """Eval inputs: one uint8 3×S×S row per eval position."""
    return {"pixels": Field("uint8", (3, int(size), int(size)))}


def train_fields(size: int, factor: int, with_masks: bool = False) -> dict[str, Field]:
    """Training copies: `factor` uint8 C×S×S rows per image (C = 4 with the pixel target of a localization
    detector)."""
    return {"pixels": Field("uint8", (4 if with_masks else 3, int(size), int(size)), rows_per_item=int(factor))}
