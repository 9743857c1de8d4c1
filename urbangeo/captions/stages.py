"""The caption stage: every image of a run captioned by one or several models, one selected.

Reads the ``images`` layer (image_id, kind, region_id, point_id, path relative to the
GeoPackage's folder, status) and writes the ``captions`` table: one row per candidate
(image_id, kind, region_id, point_id, backend, model, caption, score, selected), where
``score`` is the candidate's consensus score (mean CAPTURE against the image's other
candidates) and ``selected`` marks the one kept. Every call goes through the cache in
``captions.jsonl`` beside the GeoPackage, so a rerun pays for nothing it has already done.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from urbangeo import constants as C
from urbangeo.captions.cache import CaptionCache, cache_path_for, call_key
from urbangeo.captions.captioners import Captioner, CaptionError, ImageItem, make_captioner
from urbangeo.captions.prompts import Prompts, load_prompts
from urbangeo.errors import InputError, MissingLayerError
from urbangeo.io.files import sha256_bytes
from urbangeo.io.gpkg import check_can_write, list_layers, read_layer, write_layers
from urbangeo.io.pool import BoundedPool
from urbangeo.io.runs import StageRecord, stage_table
from urbangeo.progress import message, progress

STAGE = "caption"
CAPTION_COLUMNS = [
    C.IMAGE_ID, C.KIND, C.REGION_ID, C.POINT_ID, C.BACKEND, C.MODEL, C.CAPTION, C.SCORE,
    C.SELECTED,
]  # fmt: skip
PARSES_JSONL = "caption_parses.jsonl"
SELECT_MODES = ("capture", "first")


@dataclass
class Call:
    """One (image, model) call of the stage."""

    item: ImageItem
    model: str
    key: str
    caption: str | None = None
    cached: bool = False
    error: str | None = None


def read_caption_items(gpkg: str | os.PathLike) -> tuple[list[ImageItem], pd.DataFrame]:
    """The run's images as :class:`ImageItem` (with their region or point), and the layer."""
    path = Path(gpkg)
    try:
        images = read_layer(path, C.LAYER_IMAGES)
    except MissingLayerError as exc:
        if "does not exist" in exc.message:
            raise
        raise MissingLayerError(
            exc.message,
            hint="Fetch images first: `urbangeo tiles` and/or `urbangeo streetview` on this "
            "GeoPackage (they write layer 'images').",
        ) from exc
    missing = [c for c in (C.IMAGE_ID, C.KIND, C.PATH, C.STATUS) if c not in images]
    if missing:
        raise InputError(
            f"Layer 'images' in {path} lacks the column(s) {', '.join(missing)}.",
            hint="It must have image_id, kind, region_id, point_id, path and status.",
        )
    layers = set(list_layers(path))
    regions = read_layer(path, C.LAYER_REGIONS) if C.LAYER_REGIONS in layers else None
    points = read_layer(path, C.LAYER_SV_POINTS) if C.LAYER_SV_POINTS in layers else None
    crs = regions.crs if regions is not None else None
    region_geom = (
        dict(zip(regions[C.REGION_ID], regions.geometry, strict=True))
        if regions is not None
        else {}
    )
    point_geom, point_heading = {}, {}
    if points is not None:
        points = points.to_crs(crs) if crs is not None and points.crs != crs else points
        crs = crs or points.crs
        point_geom = dict(zip(points[C.POINT_ID], points.geometry, strict=True))
        if C.HEADING in points:
            point_heading = dict(zip(points[C.POINT_ID], points[C.HEADING], strict=True))
    own_geom = None
    geom_name = getattr(images, "_geometry_column_name", None)
    if geom_name in images and images.crs is not None:  # a spatial images layer
        own_geom = images.to_crs(crs).geometry if crs is not None else images.geometry
        crs = crs or images.crs

    items = []
    for i, row in enumerate(images.itertuples(index=False)):
        rec = row._asdict()
        region_id = _text(rec.get(C.REGION_ID))
        point_id = _text(rec.get(C.POINT_ID))
        kind = str(rec[C.KIND])
        place = point_geom.get(point_id) if kind == C.KIND_STREETVIEW else None
        place = place if place is not None else region_geom.get(region_id)
        if place is None and own_geom is not None:
            place = own_geom.iloc[i]
        rel = _text(rec.get(C.PATH))
        file = (path.parent / rel) if rel else None
        ok = str(rec[C.STATUS]) == C.STATUS_OK and file is not None and file.is_file()
        heading = point_heading.get(point_id) if kind == C.KIND_STREETVIEW else None
        items.append(
            ImageItem(
                image_id=str(rec[C.IMAGE_ID]),
                kind=kind,
                path=file if ok else None,
                region_id=region_id,
                point_id=point_id,
                place=place,
                crs=crs,
                heading=None if heading is None or pd.isna(heading) else float(heading),
            )
        )
    return items, images


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    text = str(value)
    return text or None


def _captioner(
    path: Path, backend: str | Captioner, models: Sequence[str] | None, options: dict
) -> Captioner:
    if isinstance(backend, Captioner):
        return backend
    if backend == "osm":
        osm, city = options.pop("osm", None), options.pop("city", None)
        if osm is None:
            from urbangeo.io.osm import run_extract

            try:
                osm = run_extract(path, roads=None, city=city)
            except MissingLayerError:
                osm = None
        if osm is None:
            raise InputError(
                "The osm caption backend needs an OpenStreetMap extract.",
                hint="Pass --osm FILE.osm.pbf or --city NAME (a bundled city).",
            )
        options["osm_path"] = osm
    else:
        for key in ("osm", "city", "seed", "radius"):
            options.pop(key, None)
    return make_captioner(backend, models, **options)


def run_calls(
    captioner: Captioner,
    calls: Sequence[tuple[Call, bytes | None, str]],
    cache: CaptionCache,
    *,
    concurrency: int = 4,
    role: str = "caption",
    task: str = "caption",
) -> None:
    """Make the calls that the cache does not answer, ``concurrency`` at a time.

    Each answer is appended to the cache as it arrives. A :class:`CaptionError` marks its
    call failed; any other error (an unreachable endpoint) stops the remaining calls and is
    raised.
    """
    todo = []
    for call, image, prompt in calls:
        record = cache.get(call.key)
        if record is not None:
            call.caption, call.cached = record["caption"], True
        else:
            todo.append((call, image, prompt))

    def one(call: Call, image: bytes | None, prompt: str) -> None:
        started = time.perf_counter()
        try:
            text = captioner.caption(image, prompt, call.model, call.item)
        except CaptionError as exc:
            call.error = str(exc)
            return
        call.caption = text
        cache.put(
            call.key,
            text,
            image_id=call.item.image_id,
            kind=call.item.kind,
            role=role,
            backend=captioner.name,
            model=call.model,
            prompt_sha256=sha256_bytes(prompt.encode()),
            seconds=round(time.perf_counter() - started, 3),
        )

    workers = max(1, int(concurrency)) if captioner.thread_safe else 1
    with progress(len(calls), task=task, unit="call") as bar:
        bar.update(len(calls) - len(todo), status="cached")
        if not todo:
            return
        # Each call is cached in its worker as it finishes; on an error or Ctrl-C the queued
        # calls are dropped and the running ones finish (and are cached).
        with BoundedPool(
            workers, settle=lambda call, _: bar.update(1), name="urbangeo-caption"
        ) as pool:
            for call, image, prompt in todo:
                pool.submit(call, one, call, image, prompt)


def caption_stage(
    gpkg: str | os.PathLike,
    *,
    backend: str | Captioner = "osm",
    models: Sequence[str] | None = None,
    prompts: Prompts | str | os.PathLike | None = None,
    kinds: Sequence[str] | None = None,
    limit: int | None = None,
    concurrency: int = 4,
    refine: bool = False,
    refine_options: dict | None = None,
    select: str = "capture",
    parser: str = "auto",
    overwrite: bool = False,
    **backend_options: Any,
) -> Any:
    """Caption the run's images and write the ``captions`` table (see the module docstring).

    ``backend`` is ``osm``, ``openai`` or ``transformers`` (or a :class:`Captioner`);
    ``models`` the models (several per image, as in the paper; for ``osm``: styles);
    ``backend_options`` go to the backend (``base_url``, ``api_key_env``, ``timeout``,
    ``retry``, ``max_tokens``, ``temperature``; ``osm``, ``city``, ``seed``, ``radius``;
    ``device``...). ``refine`` runs the divide-and-conquer refinement
    (:mod:`urbangeo.captions.refine`) on each caption. ``select``: ``capture`` (consensus)
    or ``first`` (no scoring).
    """
    from urbangeo.io.runs import StageResult

    path = check_can_write(gpkg, [C.LAYER_CAPTIONS], overwrite=overwrite)
    if select not in SELECT_MODES:
        raise InputError(f"Unknown selection '{select}'.", hint=f"Choose {SELECT_MODES}.")
    started = time.perf_counter()
    prompts = prompts if isinstance(prompts, Prompts) else load_prompts(prompts)
    items, _ = read_caption_items(path)
    if kinds:
        unknown = set(kinds) - {C.KIND_SATELLITE, C.KIND_STREETVIEW}
        if unknown:
            raise InputError(
                f"Unknown image kind(s) {sorted(unknown)}.",
                hint=f"Use {C.KIND_SATELLITE} and/or {C.KIND_STREETVIEW}.",
            )
        items = [i for i in items if i.kind in kinds]
    if limit is not None:
        items = items[: max(0, int(limit))]
    captioner = _captioner(path, backend, models, dict(backend_options))
    if refine and not captioner.needs_image:
        raise InputError(
            f"--refine needs a captioner that sees the image; '{captioner.name}' does not.",
            hint="Use --backend openai or transformers with --refine.",
        )
    cache = CaptionCache(cache_path_for(path))
    try:
        # A caption is half of an image-text pair: no image, nothing to caption (even for
        # captioners that describe the place rather than the pixels).
        eligible = [i for i in items if i.path is not None]
        skipped = len(items) - len(eligible)
        captioner.prepare(eligible)
        calls: list[tuple[Call, bytes | None, str]] = []
        images: dict[str, bytes | None] = {}
        failed_inputs: list[tuple[ImageItem, str]] = []
        for item in eligible:
            image = item.path.read_bytes() if item.path is not None else None
            try:
                input_sha = captioner.input_sha256(item, image)
            except CaptionError as exc:
                failed_inputs.append((item, str(exc)))
                continue
            images[item.image_id] = image
            prompt = prompts.for_kind(item.kind)
            for model in captioner.models:
                key = call_key(input_sha, captioner.name, model, prompt, captioner.options())
                calls.append((Call(item, model, key), image, prompt))
        run_calls(captioner, calls, cache, concurrency=concurrency)
        if refine:
            from urbangeo.captions.refine import refine_calls

            refine_calls(
                captioner,
                [c for c, _, _ in calls if c.caption],
                images,
                cache,
                prompts=prompts,
                concurrency=concurrency,
                **(refine_options or {}),
            )
    finally:
        captioner.close()

    failures = [(c.item, c.error) for c, _, _ in calls if c.error] + failed_inputs
    for item, error in failures[:5]:
        message(f"Image {item.image_id}: {error}", level="warning")
    if len(failures) > 5:
        message(f"... and {len(failures) - 5} more failed calls.", level="warning")
    table = selection_table(
        [c for c, _, _ in calls if c.caption], captioner.name, select, parser, path
    )
    counts = {
        "images": len(items),
        "captioned": int(table[C.IMAGE_ID].nunique()) if len(table) else 0,
        "captions": len(table),
        "cached": sum(1 for c, _, _ in calls if c.cached),
        "failed": len(failures),
        "skipped": skipped,
    }
    params = {
        "backend": captioner.name,
        "models": list(captioner.models),
        "options": captioner.options(),
        "prompts": sha256_bytes(repr(prompts).encode()),
        "refine": bool(refine),
        "select": select,
    }
    record = StageRecord(STAGE, params, counts, time.perf_counter() - started)
    write_layers(
        path,
        {C.LAYER_CAPTIONS: table, "urbangeo_stages": stage_table(path, record)},
        overwrite=True,  # checked before the work began
    )
    message(
        f"Wrote {len(table):,} captions of {counts['captioned']:,} images to {path} "
        f"(table captions; {counts['cached']:,} from the cache, {counts['failed']:,} failed, "
        f"{skipped:,} images without a file skipped)."
    )
    return StageResult(STAGE, path, counts)


def selection_table(
    calls: Sequence[Call], backend: str, select: str, parser: str, gpkg: Path | None = None
) -> pd.DataFrame:
    """The ``captions`` table: every candidate, its consensus score, the selected one."""
    rows = [
        {
            C.IMAGE_ID: c.item.image_id,
            C.KIND: c.item.kind,
            C.REGION_ID: c.item.region_id,
            C.POINT_ID: c.item.point_id,
            C.BACKEND: backend,
            C.MODEL: c.model,
            C.CAPTION: c.caption,
            C.SCORE: math.nan,
            C.SELECTED: False,
        }
        for c in calls
    ]
    table = pd.DataFrame(rows, columns=CAPTION_COLUMNS)
    if not len(table):
        return table.astype({C.SCORE: float, C.SELECTED: bool})
    groups = table.groupby(C.IMAGE_ID, sort=False).indices
    scorer = None
    if select == "capture" and any(len(ix) > 1 for ix in groups.values()):
        scorer = consensus_scorer(parser, gpkg)
    from urbangeo.captions.consensus import select_caption

    with progress(len(groups), task="consensus", unit="image") as bar:
        for ix in groups.values():
            if scorer is None:
                table.loc[table.index[ix[0]], C.SELECTED] = True
            else:
                result = select_caption(list(table[C.CAPTION].iloc[ix]), scorer=scorer)
                table.loc[table.index[ix], C.SCORE] = result.scores
                table.loc[table.index[ix[result.index]], C.SELECTED] = True
            bar.update(1)
    return table.astype({C.SCORE: float, C.SELECTED: bool})


def consensus_scorer(parser: str = "auto", gpkg: Path | None = None):
    """A CAPTURE scorer for the stage: synonym matching when WordNet is set up (else a
    warning), parses cached in ``caption_parses.jsonl`` beside the GeoPackage."""
    from urbangeo.captions.capture import CaptureScorer
    from urbangeo.captions.scenegraph import CachedParser, get_parser
    from urbangeo.captions.wordnet import wordnet_available

    synonyms = wordnet_available()
    if not synonyms:
        message(
            "WordNet is not set up: CAPTURE runs without synonym matching "
            "(run `urbangeo captions setup` once to add it).",
            level="warning",
        )
    cache_file = gpkg.parent / PARSES_JSONL if gpkg is not None else None
    cached = CachedParser(get_parser(parser), cache_file)
    return CaptureScorer(parser=cached, synonyms=synonyms, soft=True)
