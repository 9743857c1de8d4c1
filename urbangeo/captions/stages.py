"""The caption stage: every image of a run captioned by one or several models, one selected.

Reads the ``images`` layer (image_id, kind, region_id, point_id, path relative to the
GeoPackage's folder, status) and writes the ``captions`` table: one row per candidate
(image_id, kind, region_id, point_id, backend, model, caption, score, selected, truncated),
where ``score`` is the candidate's consensus score (mean CAPTURE against the image's other
candidates), ``selected`` marks the one kept and ``truncated`` a caption cut to
:data:`~urbangeo.settings.captions.MAX_CAPTION_CHARS`. Every call goes through the cache in
``captions.jsonl`` beside the GeoPackage, so a rerun pays for nothing it has already done.
When every call fails the stage writes nothing and raises :class:`CaptionsFailedError`.
Settings: :class:`~urbangeo.settings.CaptionSettings`; the run mechanism: :mod:`urbangeo.stage`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from urbangeo import constants as C
from urbangeo.captions.cache import CaptionCache, cache_path_for, call_key
from urbangeo.captions.calls import Call, run_calls, worker_context
from urbangeo.captions.captioners import Captioner, CaptionError, ImageItem, make_captioner
from urbangeo.captions.prompts import load_prompts
from urbangeo.captions.selection import (
    CAPTION_COLUMNS,
    CAPTION_DTYPES,
    PARSES_JSONL,
    TRUNCATED,
    Selector,
    selection_table,
    warm_up,
)
from urbangeo.captions.workers import WorkerPool, choose_workers
from urbangeo.errors import InputError, MissingLayerError, UrbangeoError
from urbangeo.io.files import sha256_bytes
from urbangeo.io.gpkg import list_layers, read_layer
from urbangeo.io.runs import StageResult
from urbangeo.io.spool import FrameSpool, remove_stale_spools
from urbangeo.progress import Progress, message, progress
from urbangeo.settings import CaptionSettings
from urbangeo.settings.captions import MAX_CAPTION_CHARS, SELECT_MODES
from urbangeo.stage import StageRun, stage

if TYPE_CHECKING:
    from urbangeo.io.http import RetryPolicy

STAGE = "caption"

__all__ = [
    "CAPTION_COLUMNS",
    "PARSES_JSONL",
    "SELECT_MODES",
    "TRUNCATED",
    "CaptionsFailedError",
    "caption_stage",
    "read_caption_items",
    "selection_table",
    "stage_captioner",
]


class CaptionsFailedError(UrbangeoError):
    """Every call of the stage failed: nothing was written; the same command continues."""


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
                source=_text(rec.get(C.SOURCE)),
            )
        )
    return items, images


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    text = str(value)
    return text or None


def stage_captioner(path: Path, s: CaptionSettings, retry: RetryPolicy | None = None) -> Captioner:
    """The captioner that the settings ask for, with its backend's options.

    ``retry`` replaces the openai backend's retry policy (by default its
    :data:`~urbangeo.captions.captioners.openai.DEFAULT_RETRY` with ``s.retries`` retries).
    """
    models = list(s.models or ())
    if s.backend == "osm":
        osm = s.osm
        if osm is None:
            from urbangeo.io.osm import run_extract

            try:
                osm = run_extract(path, roads=None, city=s.city)
            except MissingLayerError:
                osm = None
        if osm is None:
            raise InputError(
                "The osm caption backend needs an OpenStreetMap extract.",
                hint="Pass --osm FILE.osm.pbf or --city NAME (a bundled city).",
            )
        return make_captioner("osm", models, osm_path=osm, seed=s.seed, radius=s.radius)
    if s.backend == "openai":
        from urbangeo.captions.captioners.openai import DEFAULT_RETRY

        return make_captioner(
            "openai",
            models,
            base_url=s.base_url,
            api_key_env=s.api_key_env,
            timeout=s.timeout,
            retry=retry or dataclasses.replace(DEFAULT_RETRY, max_retries=s.retries),
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            pool_size=s.concurrency,
        )
    if s.backend == "transformers":
        return make_captioner("transformers", models, device=s.device, max_new_tokens=s.max_tokens)
    return make_captioner(s.backend, models)  # a captioner registered by a plugin


@stage(CaptionSettings, outputs=(C.LAYER_CAPTIONS,))
def caption_stage(
    run: StageRun,
    s: CaptionSettings,
    *,
    overwrite: bool,
    captioner: Captioner | None = None,
    retry: RetryPolicy | None = None,
    refine_options: dict | None = None,
    keep: Callable[[list[ImageItem]], list[ImageItem]] | None = None,
) -> StageResult:
    """Caption the run's images and write the ``captions`` table (see the module docstring).

    ``captioner`` replaces the one the settings describe (the caller keeps and closes it);
    ``retry`` the openai backend's retry policy; ``refine_options`` go to
    :func:`urbangeo.captions.refine.refine_calls` (``sam``/``owl`` models, ``max_crops``...);
    ``keep`` chooses the images to caption among those the settings choose, the captioner
    being prepared for all of them (a shard's: :mod:`urbangeo.shard_plans.caption`).
    Raises :class:`CaptionsFailedError` when every call fails (nothing written).
    """
    path = run.gpkg
    prompts = load_prompts(s.prompts)
    items, _ = read_caption_items(path)
    if s.kinds:
        items = [i for i in items if i.kind in s.kinds]
    if s.limit is not None:
        items = items[: s.limit]
    context = [i for i in items if i.path is not None]  # what the captioner prepares for
    if keep is not None:
        items = keep(items)
    owned = captioner is None
    captioner = stage_captioner(path, s, retry) if captioner is None else captioner
    cache = CaptionCache(cache_path_for(path))
    parses = s.select == "capture" and len(captioner.models) > 1
    pool = WorkerPool(choose_workers(s.workers), worker_context(captioner), parses=parses)
    try:
        return _caption(
            run, s, items, context, captioner, owned, cache, pool, prompts, refine_options
        )
    finally:
        pool.close()


def _caption(
    run: StageRun,
    s: CaptionSettings,
    items: list[ImageItem],
    context: list[ImageItem],
    captioner: Captioner,
    owned: bool,
    cache: CaptionCache,
    pool: WorkerPool,
    prompts: Any,
    refine_options: dict | None,
) -> StageResult:
    """The body of :func:`caption_stage` once its captioner, cache and workers are made: the
    images ``s.chunk_size`` at a time (calls, refinement, choice), their rows spooled to disk
    until the table is written, so that memory holds one chunk whatever the size of the run."""
    path = run.gpkg
    # A caption is half of an image-text pair: no image, nothing to caption (even for
    # captioners that describe the place rather than the pixels).
    eligible = [i for i in items if i.path is not None]
    skipped = len(items) - len(eligible)
    tally = _Tally()
    remove_stale_spools(path.parent)  # of a run killed before it could remove its own
    with FrameSpool(path.parent, CAPTION_DTYPES) as spool:
        try:
            if s.refine and not captioner.needs_image:
                raise InputError(
                    f"--refine needs a captioner that sees the image; '{captioner.name}' does not.",
                    hint="Use --backend openai or transformers with --refine.",
                )
            captioner.prepare(context)
            warm: threading.Thread | None = None
            if pool.parallel and pool.parses:
                # This process waits while the workers caption and parse: it loads what scoring
                # needs (WordNet, MiniLM) meanwhile, in a daemon thread (Ctrl-C does not wait).
                warm = threading.Thread(target=warm_up, name="urbangeo-warm-up", daemon=True)
                warm.start()
                pool.busy = warm.is_alive
            with (
                Selector(captioner.name, s.select, s.parser, path, pool=pool, warm=warm) as sel,
                progress(0, task="caption", unit="call") as bar,
            ):
                for start in range(0, len(eligible), s.chunk_size):
                    chunk = eligible[start : start + s.chunk_size]
                    done = _caption_chunk(
                        chunk, s, captioner, cache, pool, prompts, refine_options, tally, bar
                    )
                    spool.append(sel.table(done))
        finally:
            if owned:
                captioner.close()
            cache.close()
        tally.warn()
        if tally.failed and not tally.done:
            raise tally.error()
        if tally.truncated:
            cut = tally.truncated
            message(
                f"{cut:,} caption{'s' if cut > 1 else ''} longer than {MAX_CAPTION_CHARS:,} "
                f"characters {'were' if cut > 1 else 'was'} cut to that length (column "
                f'{TRUNCATED} of table captions; "{TRUNCATED}": true in {C.CAPTIONS_JSONL}).',
                level="warning",
            )
        counts = {
            "images": len(items),
            "captioned": tally.captioned,
            "captions": spool.rows,
            "cached": tally.cached,
            "failed": tally.failed,
            "skipped": skipped,
            "truncated": tally.truncated,
        }
        params = {
            "backend": captioner.name,
            "models": list(captioner.models),
            "options": captioner.options(),
            "prompts": sha256_bytes(repr(prompts).encode()),
            "refine": bool(s.refine),
            "select": s.select,
            "parser": s.parser,
        }
        result = run.commit({C.LAYER_CAPTIONS: spool.layer()}, counts=counts, params=params)
    message(
        f"Wrote {counts['captions']:,} captions of {counts['captioned']:,} images to {path} "
        f"(table captions; {counts['cached']:,} from the cache, {counts['failed']:,} failed, "
        f"{skipped:,} images without a file skipped)."
    )
    return result


def _caption_chunk(
    chunk: list[ImageItem],
    s: CaptionSettings,
    captioner: Captioner,
    cache: CaptionCache,
    pool: WorkerPool,
    prompts: Any,
    refine_options: dict | None,
    tally: _Tally,
    bar: Progress,
) -> list[Call]:
    """Caption (and refine) one chunk of images; its successful calls, counted in ``tally``."""
    calls: list[tuple[Call, bytes | None, str]] = []
    images: dict[str, bytes | None] = {}
    generation = captioner.options()  # the same for every call
    for item in chunk:
        # Read to be hashed (the calls read it again when they need it): memory holds one
        # image here, not the run's; a captioner of places (osm) reads none.
        image = item.path.read_bytes() if captioner.needs_image and item.path else None
        try:
            input_sha = captioner.input_sha256(item, image)
        except CaptionError as exc:
            tally.fail(item, str(exc))
            continue
        if s.refine:
            images[item.image_id] = image
        prompt = prompts.for_kind(item.kind, source=item.source)
        for model in captioner.models:
            key = call_key(input_sha, captioner.name, model, prompt, generation)
            calls.append((Call(item, model, key), None, prompt))
    run_calls(captioner, calls, cache, concurrency=s.concurrency, pool=pool, bar=bar)
    if s.refine:
        from urbangeo.captions.refine import refine_calls

        chosen = {"sam_model": s.sam_model, "owl_model": s.owl_model, "device": s.device}
        options = {k: v for k, v in chosen.items() if v is not None}
        refine_calls(
            captioner,
            [c for c, _, _ in calls if c.caption],
            images,
            cache,
            prompts=prompts,
            concurrency=captioner.concurrency or s.concurrency,
            **{**options, **(refine_options or {})},
        )
    done = [c for c, _, _ in calls if c.caption]
    for c, _, _ in calls:
        if c.error:
            tally.fail(c.item, c.error)
    tally.done += len(done)
    tally.cached += sum(1 for c, _, _ in calls if c.cached)
    tally.truncated += sum(1 for c in done if c.truncated)
    tally.captioned += len({c.item.image_id for c in done})
    return done


class _Tally:
    """What the chunks did: counts, the first failures and the most common reasons."""

    #: Distinct failure reasons counted (beyond them, the count goes on without the text).
    REASONS = 1000

    def __init__(self) -> None:
        self.done = self.cached = self.truncated = self.captioned = self.failed = 0
        self.first: list[tuple[ImageItem, str | None]] = []
        self.reasons: Counter[str] = Counter()

    def fail(self, item: ImageItem, error: str | None) -> None:
        self.failed += 1
        if len(self.first) < 5:
            self.first.append((item, error))
        reason = str(error)
        if reason in self.reasons or len(self.reasons) < self.REASONS:
            self.reasons[reason] += 1

    def warn(self) -> None:
        for item, error in self.first:
            message(f"Image {item.image_id}: {error}", level="warning")
        if self.failed > 5:
            message(f"... and {self.failed - 5} more failed calls.", level="warning")

    def error(self) -> CaptionsFailedError:
        """The error of a stage whose every call failed, naming the most common reason."""
        reason, times = self.reasons.most_common(1)[0]
        n = self.failed
        share = "every one" if times == n else f"{times:,} of them"
        return CaptionsFailedError(
            f"All {n:,} caption call{'s' if n > 1 else ''} failed ({share}: {reason}); "
            "nothing was written.",
            hint="Once the cause is fixed (is the server up? --base-url, --model, --timeout), "
            f"the same command continues: captions already made stay in {C.CAPTIONS_JSONL} and "
            "are never asked for twice.",
        )
