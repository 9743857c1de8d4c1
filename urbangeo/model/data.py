"""Image–caption pairs for pre-training: reading, splitting, tokenising, loading batches.

Pairs come from a run's GeoPackage (the ``images`` layer joined to the selected caption of each
image in the ``captions`` table, images with status ``ok`` only) or from a plain CSV/parquet
file a user brings (columns ``path`` and ``caption``, optionally ``region_id``, ``image_id``,
``kind``; relative paths are relative to the file's folder).

Images that cannot be read are skipped, never fatal: files missing on disk are dropped before
training (counted, one warning); files that exist but fail to decode are dropped from their
batch by :func:`collate_images` and counted by the trainer and the embedder.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import pandas as pd
import pyogrio
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

from urbangeo import constants as C
from urbangeo.errors import InputError, MissingLayerError, UrbangeoWarning
from urbangeo.imagery.kinds import canonical_kind, normalize_kinds
from urbangeo.io.gpkg import list_layers
from urbangeo.model.defaults import KIND_CHOICES, PRECISIONS

PAIR_COLUMNS = (C.IMAGE_ID, C.PATH, C.CAPTION, C.REGION_ID, C.KIND)
#: Accepted spellings of the columns of a user's pairs file.
PATH_ALIASES = ("path", "image_path", "image", "filepath", "file")
CAPTION_ALIASES = ("caption", "text", "description")
VAL_SALT = "urbangeo-val"
#: Errors PIL raises for files that are not (complete) images.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


# --------------------------------------------------------------------------------------------
# Reading pairs
# --------------------------------------------------------------------------------------------


def load_pairs(source: str | os.PathLike, *, kind: str = "all") -> pd.DataFrame:
    """Image–caption pairs from a run GeoPackage or a pairs CSV/parquet file.

    Returns a frame with columns ``image_id, path`` (absolute), ``caption, region_id, kind``, in
    a stable order (sorted by image_id). ``kind`` keeps ``overhead`` or ``streetview`` images
    only (``all``: both). Raises :class:`InputError` when no pair is left.
    """
    source = Path(source)
    kind = canonical_kind(kind)
    if kind not in KIND_CHOICES:
        raise InputError(f"kind must be one of {KIND_CHOICES}; got {kind!r}")
    if not source.exists():
        raise InputError(
            f"Pairs source {source} does not exist.",
            hint="Pass the run's GeoPackage (--gpkg) or a pairs CSV/parquet file (--pairs).",
        )
    suffix = source.suffix.lower()
    if suffix == ".gpkg":
        pairs = _pairs_from_gpkg(source)
    elif suffix in (".csv", ".parquet", ".pq"):
        pairs = _pairs_from_file(source)
    else:
        raise InputError(
            f"Cannot read pairs from {source}: unknown file type {suffix!r}.",
            hint="Use the run's .gpkg, or a .csv/.parquet file with columns path and caption.",
        )
    if kind != "all":
        pairs = pairs[pairs[C.KIND] == kind]
    if pairs.empty:
        where = "" if kind == "all" else f" of kind {kind!r}"
        raise InputError(
            f"No image–caption pairs{where} in {source}.",
            hint="Training needs images with status 'ok' and a selected caption: run the "
            "imagery and captions stages first, or check --kind.",
        )
    return pairs.sort_values(C.IMAGE_ID, kind="stable").reset_index(drop=True)


def _read_table(path: Path, layer: str, producer: str) -> pd.DataFrame:
    if layer not in list_layers(path):
        raise MissingLayerError(
            f"Layer '{layer}' is not in {path}.",
            hint=f"Run `{producer}` on this GeoPackage first.",
        )
    frame = pd.DataFrame(pyogrio.read_dataframe(path, layer=layer, read_geometry=False))
    return normalize_kinds(frame)  # kinds of runs written by urbangeo 0.1 ("satellite")


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(
            f"{what} lacks column(s) {', '.join(missing)}; it has {', '.join(frame.columns)}.",
            hint="The images layer is written by `urbangeo tiles` and `urbangeo streetview`, "
            "the captions table by `urbangeo caption`; their columns are listed in "
            "urbangeo.constants.",
        )


def read_image_rows(gpkg: str | os.PathLike) -> pd.DataFrame:
    """The ``images`` layer of a run (no geometry), with ``path`` made absolute."""
    gpkg = Path(gpkg)
    images = _read_table(gpkg, C.LAYER_IMAGES, "urbangeo tiles` or `urbangeo streetview")
    _require_columns(images, [C.IMAGE_ID, C.KIND, C.PATH, C.STATUS], f"Layer images of {gpkg}")
    if C.REGION_ID not in images:
        images[C.REGION_ID] = None
    images[C.PATH] = [str(_resolve(gpkg.parent, p)) for p in images[C.PATH]]
    return images


def _pairs_from_gpkg(gpkg: Path) -> pd.DataFrame:
    images = read_image_rows(gpkg)
    captions = _read_table(gpkg, C.LAYER_CAPTIONS, "urbangeo caption")
    _require_columns(captions, [C.IMAGE_ID, C.CAPTION, C.SELECTED], f"Table captions of {gpkg}")
    ok = images[images[C.STATUS] == C.STATUS_OK]
    selected = captions[captions[C.SELECTED].fillna(False).astype(bool)]
    selected = selected[selected[C.CAPTION].notna() & (selected[C.CAPTION].astype(str) != "")]
    if selected[C.IMAGE_ID].duplicated().any():
        # Consensus selects one caption per image; if a table has several, keep the best.
        n = int(selected[C.IMAGE_ID].duplicated().sum())
        warnings.warn(
            f"{n} extra selected caption(s) for images that already have one; keeping the "
            "highest-scored caption per image.",
            UrbangeoWarning,
            stacklevel=3,
        )
        order = [C.IMAGE_ID, C.SCORE] if C.SCORE in selected else [C.IMAGE_ID]
        ascending = [True, False][: len(order)]
        selected = selected.sort_values(order, ascending=ascending, kind="stable")
        selected = selected.drop_duplicates(C.IMAGE_ID)
    pairs = ok[[C.IMAGE_ID, C.PATH, C.REGION_ID, C.KIND]].merge(
        selected[[C.IMAGE_ID, C.CAPTION]], on=C.IMAGE_ID, how="inner"
    )
    pairs[C.IMAGE_ID] = pairs[C.IMAGE_ID].astype(str)
    pairs[C.CAPTION] = pairs[C.CAPTION].astype(str)
    return pairs[list(PAIR_COLUMNS)]


def _pick(frame: pd.DataFrame, aliases: Sequence[str], what: str, source: Path) -> str:
    lower = {str(c).lower(): c for c in frame.columns}
    for alias in aliases:
        if alias in lower:
            return lower[alias]
    raise InputError(
        f"Pairs file {source} has no {what} column (looked for {', '.join(aliases)}); it has "
        f"{', '.join(map(str, frame.columns))}.",
        hint="A pairs file needs columns path (image file) and caption, optionally region_id.",
    )


def _pairs_from_file(source: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(source) if source.suffix.lower() != ".csv" else pd.read_csv(source)
    except Exception as exc:
        raise InputError(f"Cannot read pairs file {source}: {exc}") from exc
    path_col = _pick(frame, PATH_ALIASES, "image path", source)
    caption_col = _pick(frame, CAPTION_ALIASES, "caption", source)
    frame = frame[frame[path_col].notna() & frame[caption_col].notna()]
    pairs = pd.DataFrame(
        {
            C.PATH: [str(_resolve(source.parent, p)) for p in frame[path_col]],
            C.CAPTION: frame[caption_col].astype(str).to_numpy(),
        }
    )
    pairs[C.IMAGE_ID] = (
        frame[C.IMAGE_ID].astype(str).to_numpy() if C.IMAGE_ID in frame else pairs[C.PATH]
    )
    pairs[C.REGION_ID] = frame[C.REGION_ID].to_numpy() if C.REGION_ID in frame else None
    pairs[C.KIND] = frame[C.KIND].astype(str).to_numpy() if C.KIND in frame else "unknown"
    return normalize_kinds(pairs)[list(PAIR_COLUMNS)]


def _resolve(folder: Path, path: Any) -> Path:
    p = Path(str(path))
    return p if p.is_absolute() else folder / p


def drop_excluded(pairs: pd.DataFrame, source: str | os.PathLike) -> tuple[pd.DataFrame, int, int]:
    """The pairs of the regions a run keeps, the number of pairs dropped and of their regions.

    A run's GeoPackage may exclude regions (edge cells, column ``excluded`` of its ``regions``
    layer: :mod:`urbangeo.imagery.edges`); their pairs are dropped, so that training and the
    image statistics never see their mostly blank images. Pairs files keep every pair.
    """
    from urbangeo.imagery.edges import excluded_regions

    if Path(source).suffix.lower() != ".gpkg":
        return pairs, 0, 0
    excluded = excluded_regions(source)
    if excluded.empty:
        return pairs, 0, 0
    region = pairs[C.REGION_ID]
    drop = region.notna() & region.astype(str).isin(excluded.index)
    n_regions = int(region[drop].astype(str).nunique())
    return pairs[~drop].reset_index(drop=True), int(drop.sum()), n_regions


def drop_missing_files(pairs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Pairs whose image file exists, and how many were dropped (warned once)."""
    exists = np.fromiter((os.path.isfile(p) for p in pairs[C.PATH]), bool, len(pairs))
    missing = int((~exists).sum())
    if missing:
        first = pairs.loc[~exists, C.PATH].iloc[0]
        warnings.warn(
            f"{missing} of {len(pairs)} image file(s) do not exist and are skipped (e.g. {first}).",
            UrbangeoWarning,
            stacklevel=2,
        )
    return pairs[exists].reset_index(drop=True), missing


# --------------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------------


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha1(f"{VAL_SALT}:{text}".encode()).digest()[:8], "big")


def split_pairs(
    pairs: pd.DataFrame, val_fraction: float, *, max_groups: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deterministic train/validation split, by region when regions are known.

    Groups (``region_id``, else ``image_id``) are ordered by a salted SHA-1 of their name and
    the first ``round(val_fraction * groups)`` go to validation (at most ``max_groups``): the
    split depends only on the names, not on the row order, the seed or the machine, and all
    images of a region stay on the same side (no near-duplicate leaks).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1); got {val_fraction}")
    has_region = pairs[C.REGION_ID].notna()
    groups = np.where(has_region, "r:" + pairs[C.REGION_ID].astype(str), "i:" + pairs[C.IMAGE_ID])
    names = sorted(set(groups), key=lambda g: (_stable_hash(g), g))
    n_val = round(val_fraction * len(names))
    if val_fraction > 0 and len(names) >= 4:
        n_val = max(n_val, 2)  # retrieval needs at least two candidates
    if max_groups is not None:
        n_val = min(n_val, max_groups)
    n_val = min(n_val, len(names) - 1)
    val_groups = set(names[:n_val])
    is_val = np.fromiter((g in val_groups for g in groups), bool, len(groups))
    return pairs[~is_val].reset_index(drop=True), pairs[is_val].reset_index(drop=True)


def pairs_fingerprint(pairs: pd.DataFrame) -> str:
    """A short hash of the pairs (ids, paths and captions), to refuse resuming on other data."""
    digest = hashlib.sha1()
    for row in pairs[[C.IMAGE_ID, C.PATH, C.CAPTION]].itertuples(index=False):
        digest.update("\x1f".join(map(str, row)).encode())
        digest.update(b"\x1e")
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------


@overload
def tokenize_captions(
    captions: Sequence[str], tokenizer: Any, *, chunk: int = ..., rows: Literal[False] = ...
) -> tuple[Tensor, int]: ...
@overload
def tokenize_captions(
    captions: Sequence[str], tokenizer: Any, *, chunk: int = ..., rows: Literal[True]
) -> tuple[Tensor, list[int]]: ...
def tokenize_captions(
    captions: Sequence[str], tokenizer: Any, *, chunk: int = 2048, rows: bool = False
) -> tuple[Tensor, int] | tuple[Tensor, list[int]]:
    """Token ids ``[n, context_length]`` (int32) and the number of captions truncated (with
    ``rows``: their row numbers).

    Captions longer than the context are cut (end-of-text kept last), not rejected. A row
    whose last position is filled is either exactly full or truncated; only those rows are
    re-counted.
    """
    length = int(tokenizer.context_length)
    out = torch.zeros((len(captions), length), dtype=torch.int32)
    cut: list[int] = []
    counter = getattr(tokenizer, "count_tokens", None)
    for start in range(0, len(captions), chunk):
        part = list(captions[start : start + chunk])
        tokens = tokenizer(part)
        out[start : start + len(part)] = tokens.to(torch.int32)
        full = torch.nonzero(tokens[:, -1] != 0).flatten().tolist()
        cut.extend(start + i for i in full if counter is None or counter(part[i]) > length)
    return (out, cut) if rows else (out, len(cut))


class TokenTable:
    """The token ids of ``captions``, made when rows are asked for: memory holds the captions,
    not a ``[n, context_length]`` table, and a run that sees a sample of its pairs tokenises
    that sample only. ``table[index]`` takes what a tensor takes (a tensor, list or array of
    row numbers) and gives int32 ids; :attr:`truncated` holds the rows found longer than the
    context so far.
    """

    def __init__(self, captions: Sequence[str], tokenizer: Any) -> None:
        self.captions = list(captions)
        self.tokenizer = tokenizer
        self.context_length = int(tokenizer.context_length)
        self.truncated: set[int] = set()
        self.seen: set[int] = set()

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: Any) -> Tensor:
        rows = torch.as_tensor(index).flatten().tolist()
        tokens, cut = tokenize_captions([self.captions[i] for i in rows], self.tokenizer, rows=True)
        self.seen.update(rows)
        self.truncated.update(rows[i] for i in cut)
        return tokens


# --------------------------------------------------------------------------------------------
# Datasets and batches
# --------------------------------------------------------------------------------------------


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image file as RGB (raises one of :data:`DECODE_ERRORS` when it cannot)."""
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (512, 512))  # decode large JPEGs at reduced size: far faster
        return img.convert("RGB")


#: Images sampled for the per-channel statistics of a training set.
STATS_SAMPLE = 1024


def channel_stats(
    paths: Sequence[str],
    transform: Any,
    *,
    limit: int = STATS_SAMPLE,
    seed: int = 0,
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Per-channel mean and standard deviation of the pixels of ``paths`` after ``transform``.

    ``transform`` maps a PIL image to a ``[3, H, W]`` tensor (the model's resize and crop
    without normalisation). At most ``limit`` images are read, a seeded sample of them. Images
    that fail to decode are skipped; ``None`` when none decodes. Standard deviations are
    floored at 1/255 so that a flat channel does not blow up.
    """
    paths = list(paths)
    if len(paths) > limit:
        pick = np.sort(np.random.default_rng(seed).choice(len(paths), limit, replace=False))
        paths = [paths[i] for i in pick]
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    count = 0
    for path in paths:
        try:
            pixels = transform(open_rgb(path)).to(torch.float64).flatten(1)
        except DECODE_ERRORS:
            continue
        total += pixels.sum(1)
        squares += (pixels * pixels).sum(1)
        count += pixels.shape[1]
    if count == 0:
        return None
    mean = total / count
    std = (squares / count - mean * mean).clamp(min=0).sqrt().clamp(min=1 / 255)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


class ImageDataset(Dataset):
    """Images by index; an image that fails to decode gives ``None`` (dropped by collate).

    With ``augment_seed`` set, each item's random transform is seeded from (seed, epoch,
    index): batches are identical whatever the number of workers or the point of resumption.
    """

    def __init__(
        self,
        paths: Sequence[str],
        transform: Any,
        *,
        augment_seed: int | None = None,
    ) -> None:
        self.paths = list(paths)
        self.transform = transform
        self.augment_seed = augment_seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch that seeds augmentations (call before creating the loader's iterator)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor | None, int]:
        try:
            image = open_rgb(self.paths[index])
        except DECODE_ERRORS:
            return None, index
        if self.augment_seed is None:
            return self.transform(image), index
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.augment_seed * 1_000_003 + self.epoch) * 10_000_019 + index)
            return self.transform(image), index


def collate_images(items: Sequence[tuple[Tensor | None, int]]) -> dict[str, Tensor]:
    """Stack decoded images; ``index`` holds their dataset indices, ``failed`` the others."""
    ok = [(img, i) for img, i in items if img is not None]
    failed = [i for img, i in items if img is None]
    images = torch.stack([img for img, _ in ok]) if ok else torch.empty(0)
    return {
        "images": images,
        "index": torch.tensor([i for _, i in ok], dtype=torch.long),
        "failed": torch.tensor(failed, dtype=torch.long),
    }


class ResumableSampler(DistributedSampler):
    """:class:`DistributedSampler` (same order, same padding) that can start mid-epoch.

    ``set_start(k)`` skips the first ``k`` indices of this rank's share of the epoch, so a
    resumed run sees exactly the samples an uninterrupted one would have seen next.
    """

    def __init__(
        self, n: int, *, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0
    ) -> None:
        # DistributedSampler only takes len() of its dataset; torch types it as a Dataset
        super().__init__(
            range(n),  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
        )
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip this many of this rank's indices in the current epoch (until set again)."""
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


def batches_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    """Micro-batches one rank sees per epoch (DistributedSampler pads to equal shares)."""
    return math.ceil(math.ceil(n / world_size) / batch_size)


# --------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------


def pick_device(device: str | None = None, local_rank: int = 0) -> torch.device:
    """``device`` if given, else this process's GPU when CUDA is available, else the CPU."""
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: fp32). Mixed precision needs CUDA; elsewhere it warns."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if precision == "fp32":
        return None
    if device.type != "cuda":
        if precision != "auto":
            warnings.warn(
                f"Mixed precision ({precision}) needs a CUDA GPU; training in fp32 on {device}.",
                UrbangeoWarning,
                stacklevel=2,
            )
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """``torch.autocast`` for CUDA with ``dtype``, else a no-op."""
    if dtype is None or device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=dtype)
