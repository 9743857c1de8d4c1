"""Making a caption stage's calls: each (image, model) call answered by the cache or made,
``concurrency`` at a time in threads, or, for a CPU-bound captioner, by image in chunks spread
over worker processes (:mod:`urbangeo.captions.workers`); the cache is written in this process,
in call order.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from urbangeo.captions.cache import CaptionCache
from urbangeo.captions.captioners import Captioner, CaptionError, ImageItem
from urbangeo.captions.workers import WorkerPool, picklable_by_reference, state
from urbangeo.io.files import sha256_bytes
from urbangeo.io.pool import BoundedPool
from urbangeo.progress import Progress, progress

__all__ = ["CHUNK_IMAGES", "Call", "caption_chunk", "run_calls", "worker_context"]


@dataclass
class Call:
    """One (image, model) call of the stage."""

    item: ImageItem
    model: str
    key: str
    caption: str | None = None
    cached: bool = False
    error: str | None = None
    #: The caption was cut to MAX_CAPTION_CHARS characters.
    truncated: bool = False


def image_of(captioner: Captioner, item: ImageItem, image: bytes | None) -> bytes | None:
    """The bytes a call sends: ``image`` when given, else the item's file when the captioner
    looks at images (read now, so that the stage never holds every image at once)."""
    if image is not None or not captioner.needs_image or item.path is None:
        return image
    try:
        return item.path.read_bytes()
    except OSError as exc:
        raise CaptionError(f"image {item.image_id} cannot be read: {exc}") from exc


@dataclass
class _Read:
    """One image's bytes, read by the first of its calls while the others wait."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    data: bytes | None = None
    done: bool = False


class _SharedImages:
    """The bytes of the images whose calls are in flight: each read once for all its calls
    (one per model; the first to come reads it, the others wait for it) and dropped after its
    last one."""

    def __init__(self, captioner: Captioner, calls: Sequence[tuple[Call, bytes | None, str]]):
        self.captioner = captioner
        self.left = Counter(call.item.image_id for call, _, _ in calls)
        self.entries: dict[str, _Read] = {}
        self.lock = threading.Lock()

    def get(self, item: ImageItem, image: bytes | None) -> bytes | None:
        if image is not None:
            return image
        with self.lock:
            entry = self.entries.setdefault(item.image_id, _Read())
        with entry.lock:
            if not entry.done:
                entry.data, entry.done = image_of(self.captioner, item, None), True
            return entry.data

    def release(self, item: ImageItem) -> None:
        with self.lock:
            self.left[item.image_id] -= 1
            if self.left[item.image_id] <= 0:
                self.entries.pop(item.image_id, None)


def run_calls(
    captioner: Captioner,
    calls: Sequence[tuple[Call, bytes | None, str]],
    cache: CaptionCache,
    *,
    concurrency: int = 4,
    role: str = "caption",
    task: str = "caption",
    pool: WorkerPool | None = None,
    bar: Progress | None = None,
) -> None:
    """Make the calls that the cache does not answer, ``concurrency`` at a time (or
    :attr:`Captioner.concurrency`, when the captioner sets it: the openai backend's endpoints).

    Each answer is appended to the cache as it arrives (cut to ``MAX_CAPTION_CHARS``, then
    ``call.truncated``). A :class:`CaptionError` marks its call failed; any other error (an
    unreachable endpoint) stops the remaining calls and is raised. A CPU-bound captioner
    (:attr:`~Captioner.cpu_bound`) is called once per image for all its models, in chunks of
    images spread over ``pool``'s worker processes when it has several (else in this
    process); the cache is written here, in call order, whatever the number of workers.
    ``bar``: a progress bar the calls are added to (else one of their own).
    """
    if bar is None:
        with progress(len(calls), task=task, unit="call") as own:
            _run_calls(captioner, calls, cache, concurrency, role, pool, own)
    else:
        bar.grow(len(calls))
        _run_calls(captioner, calls, cache, concurrency, role, pool, bar)


def _run_calls(
    captioner: Captioner,
    calls: Sequence[tuple[Call, bytes | None, str]],
    cache: CaptionCache,
    concurrency: int,
    role: str,
    pool: WorkerPool | None,
    bar: Progress,
) -> None:
    todo = []
    for call, image, prompt in calls:
        record = cache.get(call.key)
        if record is not None:
            call.caption, call.cached = record["caption"], True
            call.truncated = bool(record.get("truncated"))
        else:
            todo.append((call, image, prompt))

    def keep(call: Call, prompt: str, text: str, seconds: float) -> None:
        record = cache.put(
            call.key,
            text,
            image_id=call.item.image_id,
            kind=call.item.kind,
            role=role,
            backend=captioner.name,
            model=call.model,
            prompt_sha256=sha256_bytes(prompt.encode()),
            seconds=round(seconds, 3),
        )
        call.caption, call.truncated = record["caption"], bool(record.get("truncated"))

    images = _SharedImages(captioner, todo)

    def one(call: Call, image: bytes | None, prompt: str) -> None:
        started = time.perf_counter()
        try:
            image = images.get(call.item, image)
            text = captioner.caption(image, prompt, call.model, call.item)
        except CaptionError as exc:
            call.error = str(exc)
            return
        finally:
            images.release(call.item)
        keep(call, prompt, text, time.perf_counter() - started)

    # a captioner that knows how many calls it takes (its endpoints') sizes the pool
    limit = captioner.concurrency or concurrency
    workers = max(1, int(limit)) if captioner.thread_safe else 1
    with cache.appending():
        bar.update(len(calls) - len(todo), status="cached")
        if not todo:
            return
        if captioner.cpu_bound:
            _run_by_image(captioner, todo, keep, bar, pool)
            return

        def settle(call: Call, _: None) -> None:
            bar.update(1)

        # Each call is cached in its worker as it finishes; on an error or Ctrl-C the queued
        # calls are dropped and the running ones finish (and are cached).
        with BoundedPool(workers, settle=settle, name="urbangeo-caption") as threads:
            for call, image, prompt in todo:
                threads.submit(call, one, call, image, prompt)


#: Images per task of a CPU-bound captioner (one worker's share at a time).
CHUNK_IMAGES = 32
#: The calls of one image, then a chunk of images.
_Group = tuple[tuple[Call, bytes | None, str], ...]
_Chunk = tuple[_Group, ...]


def _run_by_image(
    captioner: Captioner,
    todo: Sequence[tuple[Call, bytes | None, str]],
    keep: Any,
    bar: Any,
    pool: WorkerPool | None,
) -> None:
    """The calls of a CPU-bound captioner: by image, in chunks, in worker processes if any."""
    by_image: dict[str, list[tuple[Call, bytes | None, str]]] = {}
    for entry in todo:
        by_image.setdefault(entry[0].item.image_id, []).append(entry)
    groups = [tuple(g) for g in by_image.values()]
    chunks: list[_Chunk] = [
        tuple(groups[i : i + CHUNK_IMAGES]) for i in range(0, len(groups), CHUNK_IMAGES)
    ]

    def settle(chunk: _Chunk, results: list[list[tuple[str | None, str | None, float]]]) -> None:
        for group, outs in zip(chunk, results, strict=True):
            for (call, _, prompt), (text, error, seconds) in zip(group, outs, strict=True):
                if text is None:
                    call.error = error
                else:
                    keep(call, prompt, text, seconds)
                bar.update(1)

    if pool is None or not pool.parallel or not picklable_by_reference(captioner):
        pool = WorkerPool(1)
    pool.run(
        caption_chunk,
        chunks,
        settle,
        local_args=(captioner,),
        what=_chunk_name,
    )


def _chunk_name(chunk: _Chunk) -> str:
    first, last = chunk[0][0][0].item.image_id, chunk[-1][0][0].item.image_id
    return f"image {first}" if len(chunk) == 1 else f"images {first} to {last}"


def caption_chunk(
    chunk: _Chunk, captioner: Captioner | None = None
) -> list[list[tuple[str | None, str | None, float]]]:
    """(caption, error, seconds) of each call of each image of ``chunk``, by the captioner
    given or, in a worker process, the stage's."""
    if captioner is None:
        captioner = state("captioner")
    assert captioner is not None
    out: list[list[tuple[str | None, str | None, float]]] = []
    for group in chunk:
        call, image, _ = group[0]
        started = time.perf_counter()
        try:
            image = image_of(captioner, call.item, image)
        except CaptionError as exc:
            out.append([(None, str(exc), 0.0)] * len(group))
            continue
        results = captioner.caption_many(image, call.item, [(p, c.model) for c, _, p in group])
        seconds = (time.perf_counter() - started) / len(group)
        out.append(
            [
                (None, str(r), seconds) if isinstance(r, CaptionError) else (str(r), None, seconds)
                for r in results
            ]
        )
    return out


def worker_context(captioner: Captioner) -> Any:
    """What the stage's worker processes get: a CPU-bound captioner, prepared."""
    if captioner.cpu_bound and picklable_by_reference(captioner):
        return lambda: {"captioner": captioner}
    return dict
