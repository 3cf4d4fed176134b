"""The layouts (fields) of the pixel stores, import-light (numpy only): a run's cache plan sizes its stores with
them before torch or an image library is imported, and the stores' builders use the same functions, so the
estimate and the store cannot disagree."""

from __future__ import annotations

from benchmark.array_store import Field


def eval_fields(size: int, n_crops: int = 1) -> dict[str, Field]:
    """Eval inputs: `n_crops` uint8 3×S×S rows per eval position (1, or 5 for five_crop: the position's crops in
    order, so the rows of the store are the crops themselves)."""
    return {"pixels": Field("uint8", (3, int(size), int(size)), rows_per_item=int(n_crops))}


def reference_eval_fields(size: int, max_crops: int = 1) -> dict[str, Field]:
    """The reference pipeline's eval crops (benchmark/reference_eval_cache.py): up to `max_crops` crops per
    position, each a uint8 or a float32 3×S×S row (`u8`, `f32`: a variable number per position) and its encoding
    kind (`kinds`, one row of `max_crops` per position, -1 where a position has fewer crops)."""
    row = (3, int(size), int(size))
    return {"kinds": Field("int8", (int(max_crops),)),
            "u8": Field("uint8", row, rows_per_item=None, max_rows=int(max_crops)),
            "f32": Field("float32", row, rows_per_item=None, max_rows=int(max_crops))}


def reference_upper_bound(spec) -> int:
    """Bytes on disk of a reference eval store at most: every crop float32 (a crop is stored in one form only, so
    the sum of the fields' own bounds, which counts each crop in both, would overstate it by a quarter)."""
    kinds, f32 = spec.fields["kinds"], spec.fields["f32"]
    return int(spec.n_items * (kinds.item_bytes + f32.item_bytes) + spec.n_chunks * len(spec.fields) * 128)


def train_fields(size: int, factor: int, with_masks: bool = False) -> dict[str, Field]:
    """Training copies: `factor` uint8 C×S×S rows per image (C = 4 with the pixel target of a localization
    detector)."""
    return {"pixels": Field("uint8", (4 if with_masks else 3, int(size), int(size)), rows_per_item=int(factor))}
