"""Baseline embeddings of a run's images, scored beside the trained encoder's by ``predict``.

``random`` (a randomly initialised image tower of the same architecture as the run's trained
model) and ``image-stats`` (30 colour statistics per image) answer "did pre-training help?"
in every run: the same heads on the same splits, fed these embeddings instead. Each is built
with :func:`urbangeo.model.encoders.build_encoder` and :func:`urbangeo.model.embed.embed_regions`
(the embed stage's own code, so the images, their kind and the pooling per region are the
same), once: ``baselines/embeddings_<encoder>.parquet`` beside the GeoPackage holds the
vectors with a key of what made them (the images layer's checksums, the encoder, its
architecture and seed, the image kind), and is reused while that key holds. torch is imported
only when a baseline has to be computed.

``location`` needs no images: GeoCLIP's pretrained location encoder (the optional extra
``location``; :mod:`urbangeo.model.encoders.geoclip`) at each region's centroid, 512 values,
cached in ``baselines/embeddings_location.parquet`` under a key of the region ids and centroids,
geoclip's version and the weights' checksum. It answers "does the embedding know more than
where the region is?" beside the coordinates k-NN. By default it is left out, with the reason,
where the extra is not installed; asked for by name, that is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from urbangeo import constants as C
from urbangeo.downstream.tables import embeddings_frame
from urbangeo.errors import InputError, MissingExtraError
from urbangeo.io.gpkg import list_layers, read_layer
from urbangeo.io.runs import read_stage_records

#: Baselines that embed the run's images.
IMAGE_BASELINES = ("random", "image-stats")
#: The baseline of GeoCLIP's location features at the region centroids (no images).
LOCATION = "location"
#: The embed encoder whose vectors the location baseline computes.
LOCATION_ENCODER = "geoclip-location"
#: The cache folder beside the GeoPackage.
BASELINES_DIR = "baselines"
#: The key of the cache's parquet metadata that says what made it.
KEY = "cache_key"


def image_rows(gpkg: str | os.PathLike) -> pd.DataFrame | None:
    """The run's usable images (status ok, with a region), or None when it has none."""
    if C.LAYER_IMAGES not in list_layers(gpkg):
        return None
    images = pd.DataFrame(read_layer(gpkg, C.LAYER_IMAGES))
    needed = {C.IMAGE_ID, C.KIND, C.PATH, C.STATUS, C.REGION_ID}
    if not needed <= set(images.columns):
        return None
    ok = images[(images[C.STATUS] == C.STATUS_OK) & images[C.REGION_ID].notna()]
    return ok if len(ok) else None


def _fingerprint(gpkg: Path, row: pd.Series) -> str:
    """An image's checksum; its size and modification time where the layer has none."""
    sha = row.get(C.SHA256)
    if isinstance(sha, str) and sha:
        return sha
    path = Path(str(row[C.PATH]))
    path = path if path.is_absolute() else gpkg.parent / path
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def cache_key(gpkg: str | os.PathLike, images: pd.DataFrame, spec: dict[str, Any]) -> str:
    """A digest of the images (id, kind, region, checksum) and of the encoder's ``spec``."""
    gpkg = Path(gpkg)
    rows = sorted(
        (str(r[C.IMAGE_ID]), str(r[C.KIND]), str(r[C.REGION_ID]), _fingerprint(gpkg, r))
        for _, r in images.iterrows()
    )
    text = json.dumps({"spec": spec, "images": rows}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_path(gpkg: str | os.PathLike, encoder: str) -> Path:
    """``baselines/embeddings_<encoder>.parquet`` beside the GeoPackage."""
    return Path(gpkg).parent / BASELINES_DIR / f"embeddings_{encoder}.parquet"


def embed_record(gpkg: str | os.PathLike) -> dict[str, Any]:
    """The parameters the run's embed stage recorded (empty when it has none)."""
    record = read_stage_records(gpkg).get("embed")
    return dict(record.params) if record is not None else {}


def _read_cache(path: Path, key: str) -> pd.DataFrame | None:
    """The cached features when ``path`` exists and was made from ``key``, else None."""
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception:
        return None  # unreadable: recomputed and replaced
    meta = json.loads((table.schema.metadata or {}).get(b"urbangeo", b"{}"))
    if meta.get(KEY) != key:
        return None
    return embeddings_frame(table.to_pandas(), source=str(path))


def baseline_embeddings(
    gpkg: str | os.PathLike,
    encoder: str,
    *,
    images: pd.DataFrame | None = None,
    kind: str = "auto",
    model: str | None = None,
    seed: int = 0,
    device: str | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Region embeddings of the run's images by the baseline ``encoder``, cached.

    Returns the features (region_id-indexed, as :func:`~urbangeo.downstream.tables.
    embeddings_frame`) and what was done: the file, whether it was ``reused``, the key.
    """
    if encoder not in IMAGE_BASELINES:
        raise InputError(
            f"Unknown image baseline {encoder!r}.",
            hint=f"Choose one of: {', '.join(IMAGE_BASELINES)}.",
        )
    images = image_rows(gpkg) if images is None else images
    if images is None:
        raise InputError(
            f"The {encoder} baseline needs the run's images, and {gpkg} has none.",
            hint="Fetch images first (`urbangeo tiles` or `urbangeo streetview`), or leave the "
            "image baselines out (--baselines coords).",
        )
    spec = {"encoder": encoder, "kind": kind, "seed": seed}
    if encoder == "random":
        spec["model"] = model
    key = cache_key(gpkg, images, spec)
    path = cache_path(gpkg, encoder)
    info: dict[str, Any] = {**spec, "file": str(path), KEY: key}
    cached = _read_cache(path, key)
    if cached is not None:
        return cached, {**info, "reused": True, "dim": int(cached.shape[1])}

    from urbangeo.model.embed import embed_regions, write_parquet
    from urbangeo.model.encoders import build_encoder

    built = build_encoder(encoder, model=model, seed=seed)
    emb = embed_regions(gpkg, built, kind=kind, device=device)
    emb.info[KEY] = key
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(emb, path)
    features = embeddings_frame(emb.frame.drop(columns=["n_images"]), source=str(path))
    return features, {**info, "reused": False, "dim": int(features.shape[1])}


def image_baselines(
    gpkg: str | os.PathLike | None,
    names: tuple[str, ...] | list[str],
    *,
    regions: pd.Index,
    explicit: bool = True,
    device: str | None = None,
) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, Any]]]:
    """The embeddings of the image baselines and the ``location`` baseline among ``names`` for
    the regions scored.

    Each image baseline is embedded like the run's own embeddings (the embed stage's recorded
    image kind and, for ``random``, architecture). A baseline that cannot be computed (no
    GeoPackage or no images; the location extra not installed; the embeddings scored already
    are that encoder's; regions it does not cover) is left out with its reason, or refused when
    ``explicit`` (asked for by name). Returns the features by name and, per baseline, what was
    done.
    """
    wanted = [n for n in names if n in IMAGE_BASELINES]
    images = image_rows(gpkg) if gpkg is not None and wanted else None
    features: dict[str, pd.DataFrame] = {}
    info: dict[str, dict[str, Any]] = {}
    if gpkg is not None and images is not None:
        features, info = _embedded_baselines(
            gpkg, wanted, images, regions=regions, explicit=explicit, device=device
        )
    elif wanted:
        reason = "no run GeoPackage" if gpkg is None else f"{gpkg} has no images"
        if explicit:
            raise InputError(
                f"The {' and '.join(wanted)} baseline(s) embed the run's images: {reason}.",
                hint="Give the run's GeoPackage (--gpkg) after fetching its images, or leave "
                "them out (--baselines coords).",
            )
        info = {n: {"skipped": reason} for n in wanted}
    if LOCATION in names:
        frame, done = location_baseline(gpkg, regions=regions, explicit=explicit, device=device)
        if frame is not None:
            features[LOCATION] = frame
        info[LOCATION] = done
    return features, info


def _location_key(region_ids: list[str], latlon: Any, spec: dict[str, Any]) -> str:
    """A digest of the region ids and centroids (to 1e-7 degrees) and of the encoder's spec."""
    rows = [
        (rid, round(float(lat), 7), round(float(lon), 7))
        for rid, (lat, lon) in zip(region_ids, latlon, strict=True)
    ]
    text = json.dumps({"spec": spec, "regions": rows}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def location_baseline(
    gpkg: str | os.PathLike | None,
    *,
    regions: pd.Index,
    explicit: bool = True,
    device: str | None = None,
) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """GeoCLIP location features of the regions scored (``regions``), cached beside the run.

    Returns the features (None when skipped) and what was done: the file, whether it was
    ``reused``, the key; or ``skipped`` with the reason. Refused instead of skipped when
    ``explicit``, except where the embeddings scored are already GeoCLIP's.
    """
    from urbangeo.model.encoders import geoclip

    def skip(reason: str, error: Exception | None = None) -> tuple[None, dict[str, Any]]:
        if explicit and error is not None:
            raise error
        return None, {"skipped": reason}

    if gpkg is None:
        reason = "no run GeoPackage (it encodes the regions' centroids)"
        hint = "Give the run's GeoPackage (--gpkg), or leave it out (--baselines coords)."
        return skip(
            reason, InputError(f"The location baseline needs the regions: {reason}.", hint=hint)
        )
    if embed_record(gpkg).get("encoder") == LOCATION_ENCODER:
        return skip("the embeddings scored are this encoder's")
    weights = geoclip.weights_path()
    if weights is None:
        reason = f"geoclip is not installed (pip install 'urbangeo[{geoclip.EXTRA}]')"
        return skip(reason, geoclip.missing_extra("The location baseline"))
    layer = read_layer(gpkg, C.LAYER_REGIONS)
    layer[C.REGION_ID] = layer[C.REGION_ID].astype(str)
    latlon = geoclip.region_latlon(layer)
    spec = {
        "encoder": LOCATION_ENCODER,
        "geoclip": geoclip.geoclip_version(),
        "weights_sha256": geoclip.weights_sha256(weights),
    }
    key = _location_key(layer[C.REGION_ID].tolist(), latlon, spec)
    path = cache_path(gpkg, LOCATION)
    info: dict[str, Any] = {**spec, "file": str(path), KEY: key}
    frame = _read_cache(path, key)
    reused = frame is not None
    if frame is None:
        from urbangeo.model.encoders.region_encoder import write_vectors_parquet

        try:
            result = geoclip.GeoClipLocationEncoder(device=device).encode(layer)
        except MissingExtraError as exc:  # geoclip found but not importable (a dependency)
            return skip(str(exc), exc)
        result.info[KEY] = key
        path.parent.mkdir(parents=True, exist_ok=True)
        write_vectors_parquet(result, path)
        frame = embeddings_frame(result.frame, source=str(path))
    info.update(reused=reused, dim=int(frame.shape[1]))
    missing = regions.difference(frame.index)
    if len(missing):
        reason = f"no centroid for {len(missing)} of the {len(regions)} regions scored"
        refused = InputError(
            f"The location baseline has {reason} (e.g. {missing[0]!r}): they are not in the "
            "run's regions layer.",
            hint="Score the run's own regions, or leave it out (--baselines coords).",
        )
        return skip(reason, refused)
    return frame.loc[regions], info


def _embedded_baselines(
    gpkg: str | os.PathLike,
    wanted: list[str],
    images: pd.DataFrame,
    *,
    regions: pd.Index,
    explicit: bool,
    device: str | None,
) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, Any]]]:
    """The image baselines ``wanted`` of a run with ``images`` (see :func:`image_baselines`)."""
    features: dict[str, pd.DataFrame] = {}
    info: dict[str, dict[str, Any]] = {}
    record = embed_record(gpkg)
    kind = str(record.get("kind") or "auto")
    model = record.get("model") if record.get("encoder") != "image-stats" else None
    for name in wanted:
        if record.get("encoder") == name:
            info[name] = {"skipped": "the embeddings scored are this encoder's"}
            continue
        frame, done = baseline_embeddings(
            gpkg,
            name,
            images=images,
            kind=kind,
            model=str(model) if model else None,
            device=device,
        )
        missing = regions.difference(frame.index)
        if len(missing):
            reason = f"no embedding for {len(missing)} of the {len(regions)} regions scored"
            if explicit:
                raise InputError(
                    f"The {name} baseline has {reason} (e.g. {missing[0]!r}).",
                    hint="Score the run's own embeddings, or leave the image baselines out "
                    "(--baselines coords).",
                )
            info[name] = {**done, "skipped": reason}
            continue
        features[name] = frame.loc[regions]
        info[name] = done
    return features, info
