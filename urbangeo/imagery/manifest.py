"""The ``images`` layer: one row per image, fetched or not, and the resume logic around it.

Image files are written atomically (a temporary file beside the target, then ``os.replace``),
so a file that exists is complete. The layer is written in batches and at the end; after a
crash the next run rebuilds the rows of images already on disk (each one decoded with Pillow
first, so a truncated file is refetched, never trusted). A rerun skips an image whose file
exists and whose sha256 matches its row.

Files and rows change together. A file that a row describes is never replaced before the
layer that describes its successor is written: with ``overwrite`` the new images go to a
staging folder beside the old ones (``images/.staging/<kind>/``) and are moved into place
right after the new layer is committed. Until then a failure (an error, a full disk, Ctrl-C)
leaves the earlier layer and files as they were, and the staged images are reused by the next
run with the same settings. A crash between the commit and the moves is finished by the next
run of the stage (a staged file whose sha256 is the committed row's is moved into place).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import pandas as pd
import shapely

from urbangeo import constants as C
from urbangeo.errors import OutputError, UrbangeoError, UrbangeoWarning
from urbangeo.imagery.edges import VALID_SHARE
from urbangeo.imagery.png import check_image_file, png_valid_share
from urbangeo.io.files import sha256_bytes, sha256_file, write_bytes_atomic, write_text_atomic
from urbangeo.io.gpkg import list_layers, read_layer, write_layers
from urbangeo.io.runs import (
    STAGES_TABLE,
    StageRecord,
    StageResult,
    downstream_of,
    read_stage_records,
    stage_table,
)

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

    from urbangeo.stage import StageRun

#: Columns of the ``images`` layer, in order (plus the geometry).
IMAGE_COLUMNS = [
    C.IMAGE_ID,
    C.KIND,
    C.REGION_ID,
    C.POINT_ID,
    C.PATH,
    C.SOURCE,
    C.STATUS,
    C.REASON,
    C.WIDTH,
    C.HEIGHT,
    C.SHA256,
    VALID_SHARE,
]
#: Seconds between two writes of the manifest during a long run.
FLUSH_EVERY_S = 30.0
#: Where new images wait, per kind, until the layer that describes them is committed.
STAGING_DIR = f"{C.IMAGES_DIR}/.staging"
#: The settings the staged images were made with (staged images of other settings are dropped).
STAGING_PARAMS = "params.json"


class ImagesFailedError(UrbangeoError):
    """Every image a stage tried failed and none is usable (a server down, a wrong URL...)."""


@dataclass(frozen=True)
class ImageJob:
    """One image a stage should make: where it goes and what it shows."""

    image_id: str
    region_id: str | None
    point_id: int | None
    path: str  # relative to the GeoPackage's folder, posix
    geometry: shapely.Point


@dataclass(frozen=True)
class ImageResult:
    """What became of one :class:`ImageJob`."""

    status: str
    reason: str = ""
    width: int | None = None
    height: int | None = None
    sha256: str | None = None
    source: str = ""
    #: The share of the image with data (0..1; None: not known).
    valid_share: float | None = None


def empty_images_frame(crs: object) -> gpd.GeoDataFrame:
    """An ``images`` layer with no rows."""
    return images_frame([], crs)


def images_frame(rows: list[dict], crs: object) -> gpd.GeoDataFrame:
    """The ``images`` layer from row dicts (IMAGE_COLUMNS plus ``geometry``)."""
    frame = pd.DataFrame(rows, columns=[*IMAGE_COLUMNS, "geometry"])
    frame[C.POINT_ID] = pd.array(frame[C.POINT_ID], dtype="Int64")
    frame[C.WIDTH] = pd.array(frame[C.WIDTH], dtype="Int64")
    frame[C.HEIGHT] = pd.array(frame[C.HEIGHT], dtype="Int64")
    frame[VALID_SHARE] = pd.to_numeric(frame[VALID_SHARE], errors="coerce").astype("float64")
    for col in (C.IMAGE_ID, C.KIND, C.REGION_ID, C.PATH, C.SOURCE, C.STATUS, C.REASON, C.SHA256):
        frame[col] = frame[col].astype(object)
    return gpd.GeoDataFrame(frame, geometry="geometry", crs=crs)


def _row_dict(row: pd.Series) -> dict:
    out: dict[str, Any] = {}
    for col in IMAGE_COLUMNS:
        value = row.get(col)
        missing = value is None or (not isinstance(value, str) and pd.isna(value))
        out[col] = None if missing else value
    if out[C.POINT_ID] is not None:
        out[C.POINT_ID] = int(out[C.POINT_ID])
    for col in (C.WIDTH, C.HEIGHT):
        if out[col] is not None:
            out[col] = int(out[col])
    if out[VALID_SHARE] is not None:
        out[VALID_SHARE] = float(out[VALID_SHARE])
    out["geometry"] = row.geometry
    return out


def status_counts(statuses: Iterable[str]) -> dict[str, int]:
    """Images by status (ok, missing, failed), from their rows' statuses."""
    statuses = list(statuses)
    return {s: statuses.count(s) for s in (C.STATUS_OK, C.STATUS_MISSING, C.STATUS_FAILED)}


def in_crs(frame: gpd.GeoDataFrame, crs: object) -> gpd.GeoDataFrame:
    """``frame`` in ``crs`` (as it is when either has none, or they are the same)."""
    if frame.crs is not None and crs is not None and frame.crs != crs:
        return frame.to_crs(crs)
    return frame


class Manifest:
    """The rows of one kind of image in a run's ``images`` layer, kept while a stage works.

    ``run`` is the stage at work (its GeoPackage and its record's name); ``params`` are the
    settings that decide what an image looks like. Rows of the other kind are kept as they
    are. With a record of the same stage made with other settings, a rerun needs
    ``overwrite``, which redoes every image: the new ones are staged and replace the old ones
    only at :meth:`_commit`.
    """

    def __init__(
        self,
        run: StageRun,
        kind: str,
        params: dict,
        crs: object,
        *,
        overwrite: bool = False,
        flush_every: float = FLUSH_EVERY_S,
        source: str = "",
    ) -> None:
        self.gpkg = gpkg = run.gpkg
        self.root = gpkg.parent
        self.kind = kind
        self.stage = stage = run.stage
        self.params = params
        self.crs = crs
        self.overwrite = overwrite
        self.flush_every = flush_every
        #: The ``source`` of rows adopted from files on disk (when the stage knows it).
        self.source = source
        self._last_flush = time.monotonic()
        self._started = time.perf_counter()
        self.rows: dict[str, dict] = {}
        self.others = empty_images_frame(crs)
        self.adopted = 0
        #: Whether the rows differ from the layer as it was when the stage began.
        self.changed = False
        self.pending: set[str] = set()
        self.order: dict[str, int] = {}
        #: Where new images wait for :meth:`_commit` (with ``overwrite``).
        self.staging = self.root / STAGING_DIR / kind
        self.record_before: StageRecord | None = None
        previous: dict[str, dict] = {}
        if C.LAYER_IMAGES in list_layers(gpkg):
            existing = in_crs(read_layer(gpkg, C.LAYER_IMAGES), crs)
            mine = existing[C.KIND] == kind
            self.others = existing[~mine]
            rows = (_row_dict(series) for _, series in existing[mine].iterrows())
            previous = {r[C.IMAGE_ID]: r for r in rows}
            record = self.record_before = read_stage_records(gpkg).get(stage)
            self._finish_moves(previous.values())
            if previous and record is not None and record.params != params and not overwrite:
                changed = sorted(
                    k
                    for k in set(params) | set(record.params)
                    if params.get(k) != record.params.get(k)
                )
                raise OutputError(
                    f"{len(previous):,} {kind} images in {gpkg} were made with other settings "
                    f"({', '.join(changed)} differ).",
                    hint="Pass --overwrite (Python: overwrite=True) to replace them, or rerun "
                    "with the same settings to continue.",
                )
        if overwrite:
            self._open_staging()
        else:
            self.rows = previous

    # --- planning and resume ------------------------------------------------------------------
    def keep_only(self, image_ids: Iterable[str]) -> None:
        """Forget rows of images the current plan no longer has (e.g. after a new grid)."""
        wanted = set(image_ids)
        kept = {k: v for k, v in self.rows.items() if k in wanted}
        self.changed = self.changed or len(kept) != len(self.rows)
        self.rows = kept

    def start(self, order: Iterable[str], todo: Iterable[str]) -> None:
        """The plan's image ids in layer order, and those still to make (the pending ones)."""
        self.order = {image_id: i for i, image_id in enumerate(order)}
        self.pending = set(todo)

    def plan(self, jobs: Sequence[ImageJob], *, settings: str | None = None) -> list[int]:
        """Start on ``jobs`` (the plan, in layer order; rows of other images are forgotten):
        the indices of those still to make (see :meth:`is_done`)."""
        self.keep_only(job.image_id for job in jobs)
        todo = [i for i, job in enumerate(jobs) if not self.is_done(job, settings=settings)]
        self.start((job.image_id for job in jobs), (jobs[i].image_id for i in todo))
        return todo

    def staged_path(self, job: ImageJob) -> Path:
        """Where the new image of ``job`` waits for :meth:`_commit` (with ``overwrite``)."""
        return self.staging / Path(job.path).name

    def is_done(self, job: ImageJob, *, settings: str | None = None) -> bool:
        """Whether ``job`` needs no work: its file exists and matches its row.

        A row with status missing (no imagery there) counts as done. A file without a row (a
        run cut off before the manifest was written) is decoded and, if complete, adopted;
        with ``overwrite`` only a staged file is (one made by an earlier try of the same
        settings), never the file being replaced. With ``settings``, a PNG must carry them.
        """
        if self.overwrite:
            return self._adopt(job, self.staged_path(job), settings)
        row = self.rows.get(job.image_id)
        file = self.root / job.path
        if row is not None and row[C.STATUS] == C.STATUS_MISSING:
            return True
        if row is not None and row[C.STATUS] == C.STATUS_OK and row[C.SHA256] and file.is_file():
            if sha256_file(file) == row[C.SHA256]:
                return True
            self.rows.pop(job.image_id)  # changed or truncated since: make it again
            self.changed = True
            return False
        if row is None:
            return self._adopt(job, file, settings)
        return False

    def _adopt(self, job: ImageJob, file: Path, settings: str | None) -> bool:
        if not file.is_file():
            return False
        size = check_image_file(file, settings=settings)
        if size is None:
            return False
        result = ImageResult(
            C.STATUS_OK,
            width=size[0],
            height=size[1],
            sha256=sha256_file(file),
            source=self.source,
            valid_share=png_valid_share(file),
        )
        self.record(job, result)
        self.adopted += 1
        return True

    def record(self, job: ImageJob, result: ImageResult) -> None:
        """Remember what became of ``job`` (and write the manifest if it is time to)."""
        self.rows[job.image_id] = {
            C.IMAGE_ID: job.image_id,
            C.KIND: self.kind,
            C.REGION_ID: job.region_id,
            C.POINT_ID: job.point_id,
            C.PATH: job.path if result.status == C.STATUS_OK else None,
            C.SOURCE: result.source or (self.rows.get(job.image_id) or {}).get(C.SOURCE),
            C.STATUS: result.status,
            C.REASON: result.reason or None,
            C.WIDTH: result.width,
            C.HEIGHT: result.height,
            C.SHA256: result.sha256,
            VALID_SHARE: result.valid_share,
            "geometry": job.geometry,
        }
        self.changed = True
        self.pending.discard(job.image_id)
        if time.monotonic() - self._last_flush >= self.flush_every:
            self.flush()

    def write(
        self,
        job: ImageJob,
        data: bytes,
        *,
        source: str,
        size: tuple[int, int],
        valid_share: float | None = None,
    ) -> ImageResult:
        """Write an image's bytes atomically (staged, with ``overwrite``); the ok result to
        :meth:`record` (thread-safe)."""
        target = self.staged_path(job) if self.overwrite else self.root / job.path
        try:
            write_bytes_atomic(target, data)
        except OSError as exc:
            kept = " The earlier images and layer are unchanged." if self.overwrite else ""
            raise OutputError(
                f"Cannot write the image {target}: {exc.strerror or exc}.",
                hint="Free some disk space (or fix the folder's permissions) and rerun the "
                f"same command: it continues where it stopped.{kept}",
            ) from exc
        return ImageResult(
            C.STATUS_OK,
            width=size[0],
            height=size[1],
            sha256=sha256_bytes(data),
            source=source,
            valid_share=valid_share,
        )

    def save(self, job: ImageJob, data: bytes, *, source: str, size: tuple[int, int]) -> None:
        """Write an image's bytes atomically and record it as ok."""
        self.record(job, self.write(job, data, source=source, size=size))

    # --- reading ---------------------------------------------------------------------------
    def frame(
        self, order: Callable[[str], SupportsRichComparison] | None = None
    ) -> gpd.GeoDataFrame:
        """The whole ``images`` layer: other kinds first, then this kind's rows."""
        rows = list(self.rows.values())
        if order is None and self.order:
            last = len(self.order)
            order = lambda image_id: self.order.get(image_id, last)  # noqa: E731
        if order is not None:
            rows.sort(key=lambda r: order(r[C.IMAGE_ID]))
        mine = images_frame(rows, self.crs)
        if self.others.empty:
            return mine
        others = images_frame([_row_dict(s) for _, s in self.others.iterrows()], self.crs)
        return pd.concat([others, mine], ignore_index=True)

    def counts(self) -> dict[str, int]:
        """Images by status."""
        return status_counts(r[C.STATUS] for r in self.rows.values())

    def _failures(self) -> tuple[int, str, int]:
        """(images failed, the most common reason, how many failed for it)."""
        reasons = [
            r[C.REASON] or "no reason given"
            for r in self.rows.values()
            if r[C.STATUS] == C.STATUS_FAILED
        ]
        if not reasons:
            return 0, "", 0
        reason, times = Counter(reasons).most_common(1)[0]
        return len(reasons), reason, times

    def warn_failures(self, *, stacklevel: int = 2) -> None:
        """Warn when images failed, with the most common reason: a run where images failed
        should not read like a success."""
        failed, reason, times = self._failures()
        if not failed:
            return
        ok = sum(r[C.STATUS] == C.STATUS_OK for r in self.rows.values())
        warnings.warn(
            f"{failed:,} {self.kind} images failed"
            + (" (none succeeded)" if ok == 0 else "")
            + f"; the most common reason ({times:,} of them): {reason}. "
            "Rerun the same command to retry only those (each one's reason is in column "
            f"'{C.REASON}' of layer {C.LAYER_IMAGES}).",
            UrbangeoWarning,
            stacklevel=stacklevel,
        )

    def check_usable(self) -> None:
        """Raise :class:`ImagesFailedError` when images failed and none is usable.

        Without ``overwrite`` the failed rows are written first (with their reasons; a rerun
        retries them); with it, the earlier layer and files stay as they were.
        """
        failed, reason, times = self._failures()
        if not failed or self.counts()[C.STATUS_OK]:
            return
        self.flush()
        where = (
            "The earlier images and layer are unchanged; rerun"
            if self.overwrite
            else f"Each image's reason is in column '{C.REASON}' of layer {C.LAYER_IMAGES}. Rerun"
        )
        raise ImagesFailedError(
            f"No {self.kind} image could be made: {failed:,} failed; the most common reason "
            f"({times:,} of them): {reason}",
            hint="Check the image source (its address, key and status). "
            f"{where} the same command to retry the failed images.",
        )

    # --- writing ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Write the progress so far: the ``images`` layer and this stage's record (with the
        count of images still pending), in one atomic write.

        Nothing is written with ``overwrite`` (the earlier layer stays until :meth:`_commit`)
        or when nothing changed.
        """
        self._last_flush = time.monotonic()
        if self.overwrite or not self.changed:
            return
        counts = {**self.counts(), "pending": len(self.pending)}
        record = StageRecord(self.stage, self.params, counts, time.perf_counter() - self._started)
        table = stage_table(self.gpkg, record, invalidates=downstream_of(self.stage))
        write_layers(self.gpkg, {C.LAYER_IMAGES: self.frame(), STAGES_TABLE: table}, overwrite=True)

    def flush_quietly(self) -> None:
        """:meth:`flush` after an error: a second error (a full disk) does not hide the first."""
        with contextlib.suppress(Exception):
            self.flush()

    @contextlib.contextmanager
    def kept_on_error(self) -> Iterator[None]:
        """What was made is kept when the block fails (not with ``overwrite``: see
        :meth:`_commit`)."""
        try:
            yield
        except BaseException:
            self.flush_quietly()
            raise

    def _commit(
        self, run: StageRun, layers: Mapping[str, pd.DataFrame], counts: Mapping[str, int]
    ) -> StageResult:
        """Finish the stage: the layer (with other ``layers`` of the stage) and the stage's
        record (with more ``counts``) in one atomic write, then the staged images moved into
        place. A rerun that changed nothing writes nothing."""
        status = self.counts()
        recorded = {**status, "pending": 0, **counts}
        before = self.record_before
        unchanged = (
            not self.changed
            and not layers
            and before is not None
            and before.params == self.params
            and before.counts == recorded
            and before.fingerprint == run.fingerprint()  # else the record says other settings
        )
        if unchanged:
            result = StageResult(self.stage, self.gpkg, status)
        else:
            written = {C.LAYER_IMAGES: self.frame(), **layers}
            result = run.commit(written, counts=recorded, params=self.params)
        self._finish_moves(self.rows.values(), verify=not self.overwrite)
        shutil.rmtree(self.staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.staging.parent.rmdir()  # images/.staging, when no other kind waits there
        return dataclasses.replace(result, counts=status)

    def finish(
        self,
        run: StageRun,
        *,
        layers: Mapping[str, pd.DataFrame] | None = None,
        counts: Mapping[str, int] | None = None,
    ) -> StageResult:
        """The end of the stage: :meth:`check_usable`, the commit (the layer with other
        ``layers`` of the stage, the record with more ``counts``: :meth:`_commit`),
        :meth:`warn_failures`."""
        self.check_usable()
        result = self._commit(run, layers or {}, counts or {})
        self.warn_failures(stacklevel=3)
        return result

    # --- staging ---------------------------------------------------------------------------
    def _open_staging(self) -> None:
        """Make the staging folder; staged images of other settings are dropped."""
        marker = self.staging / STAGING_PARAMS
        text = json.dumps(self.params, sort_keys=True, default=str)
        if self.staging.exists():
            try:
                same = marker.read_text(encoding="utf-8") == text
            except OSError:
                same = False
            if not same:
                shutil.rmtree(self.staging, ignore_errors=True)
        if not marker.is_file():
            try:
                write_text_atomic(marker, text)
            except OSError as exc:
                raise OutputError(
                    f"Cannot write to {self.staging}: {exc.strerror or exc}.",
                    hint="Free some disk space (or fix the folder's permissions) and rerun the "
                    "same command. The earlier images and layer are unchanged.",
                ) from exc

    def _finish_moves(self, rows: Iterable[dict], *, verify: bool = True) -> None:
        """Move the staged images of committed ``rows`` into place (``verify``: only those
        whose sha256 is the row's, after a crash; the rows of :meth:`_commit` are their own)."""
        if not self.staging.is_dir():
            return
        for row in rows:
            if row[C.STATUS] != C.STATUS_OK or not row[C.PATH] or not row[C.SHA256]:
                continue
            staged = self.staging / Path(row[C.PATH]).name
            if not staged.is_file():
                continue
            if not verify or sha256_file(staged) == row[C.SHA256]:
                final = self.root / row[C.PATH]
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, final)
