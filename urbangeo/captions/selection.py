"""Choosing each image's caption among its candidates: CAPTURE consensus over scene graphs.

:class:`Selector` turns the calls of a chunk of images into rows of the ``captions`` table
(every candidate, its consensus score, the one selected) and keeps what the next chunks reuse:
one parser whose parses are cached in ``caption_parses.jsonl`` (an index in memory, the
graphs read back as needed), one scorer, and the stage's progress bars.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from urbangeo import constants as C
from urbangeo.captions.calls import Call
from urbangeo.captions.workers import WorkerPool
from urbangeo.progress import Progress, message, progress

#: Column of the captions table: the caption was cut to MAX_CAPTION_CHARS characters.
TRUNCATED = "truncated"
CAPTION_COLUMNS = [
    C.IMAGE_ID, C.KIND, C.REGION_ID, C.POINT_ID, C.BACKEND, C.MODEL, C.CAPTION, C.SCORE,
    C.SELECTED, TRUNCATED,
]  # fmt: skip
#: Types of the captions table's columns (pandas, and the stage's spool).
CAPTION_DTYPES: dict[str, type] = {
    **{c: object for c in CAPTION_COLUMNS},
    C.SCORE: float,
    C.SELECTED: bool,
    TRUNCATED: bool,
}
PARSES_JSONL = "caption_parses.jsonl"


class Selector:
    """Chooses the caption of each image of the chunks given to :meth:`table`, in order.

    The candidates' captions are parsed first, in batches, in ``pool``'s worker processes
    when it has several. ``warm``: a thread loading what scoring needs (:func:`warm_up`);
    once it is done, images are scored while the workers parse the next ones. Progress goes
    to one ``parse`` and one ``consensus`` bar for all chunks (closed by :meth:`close`).
    """

    def __init__(
        self,
        backend: str,
        select: str,
        parser: str,
        gpkg: Path | None = None,
        *,
        pool: WorkerPool | None = None,
        warm: threading.Thread | None = None,
    ) -> None:
        self.backend, self.select, self.parser, self.gpkg = backend, select, parser, gpkg
        self.pool, self.warm = pool, warm
        self._cached: Any = None
        self._scorer: Any = None
        self._bars: dict[str, Progress] = {}
        self._stack = contextlib.ExitStack()

    def _bar(self, task: str, unit: str, n: int) -> Progress:
        if task not in self._bars:
            self._bars[task] = self._stack.enter_context(progress(0, task=task, unit=unit))
        bar = self._bars[task]
        bar.grow(n)
        return bar

    def close(self) -> None:
        """Close the bars and the parse cache's file."""
        self._stack.close()
        if self._cached is not None:
            self._cached.close()

    def __enter__(self) -> Selector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def table(self, calls: Sequence[Call]) -> pd.DataFrame:
        """The rows of the ``captions`` table of ``calls`` (the images' successful calls)."""
        table = pd.DataFrame(
            [
                (c.item.image_id, c.item.kind, c.item.region_id, c.item.point_id, self.backend,
                 c.model, c.caption, math.nan, False, bool(c.truncated))
                for c in calls
            ],
            columns=CAPTION_COLUMNS,
        )  # fmt: skip
        if not len(table):
            return table.astype(CAPTION_DTYPES)
        groups = list(table.groupby(C.IMAGE_ID, sort=False).indices.values())
        chooser = _Chooser(table, groups)
        if self.select == "capture" and any(len(ix) > 1 for ix in groups):
            self._parse(table, groups, chooser)
        bar = self._bar("consensus", "image", len(groups))
        bar.update(chooser.chosen)
        chooser.choose(self._scorer, only_parsed=False, tick=bar.update)
        return table.astype(CAPTION_DTYPES)

    def _parse(self, table: pd.DataFrame, groups: list, chooser: _Chooser) -> None:
        if self._cached is None:
            self._cached = consensus_parser(self.parser, self.gpkg)
        cached = self._cached
        texts = [t for ix in groups if len(ix) > 1 for t in table[C.CAPTION].iloc[ix]]
        bar = self._bar("parse", "caption", len({t for t in texts if t not in cached}))

        def parsed(n: int) -> None:
            bar.update(n)
            # While workers parse, this process scores the images parsed so far, as soon as
            # the warm-up has loaded WordNet and MiniLM (same order, same scores).
            if self._scorer is None and self.warm is not None and not self.warm.is_alive():
                self._scorer = consensus_scorer(cached)
            if self._scorer is not None:
                chooser.choose(self._scorer, only_parsed=True, cached=cached)

        cached.parse_many(texts, pool=self.pool, progress=parsed)
        if self.warm is not None:
            self.warm.join()
        if self._scorer is None:
            self._scorer = consensus_scorer(cached)


class _Chooser:
    """The choice of a chunk's images, in order: ``chosen`` images are done."""

    def __init__(self, table: pd.DataFrame, groups: list) -> None:
        self.table, self.groups, self.chosen = table, groups, 0

    def choose(
        self,
        scorer: Any,
        *,
        only_parsed: bool,
        cached: Any = None,
        tick: Callable[[int], Any] | None = None,
    ) -> None:
        """Choose the caption of the next images (``only_parsed``: up to the first whose
        captions are not all parsed yet); ``tick(1)`` after each."""
        from urbangeo.captions.consensus import select_caption

        table, groups = self.table, self.groups
        while self.chosen < len(groups):
            ix = groups[self.chosen]
            if scorer is not None and len(ix) > 1:
                texts = list(table[C.CAPTION].iloc[ix])
                if only_parsed and not all(t in cached for t in texts):
                    return
                result = select_caption(texts, scorer=scorer)
                table.loc[table.index[ix], C.SCORE] = result.scores
                table.loc[table.index[ix[result.index]], C.SELECTED] = True
            else:  # nothing to agree with, or --select first
                table.loc[table.index[ix[0]], C.SELECTED] = True
            self.chosen += 1
            if tick is not None:
                tick(1)


def selection_table(calls: Sequence[Call], *args: Any, **kwargs: Any) -> pd.DataFrame:
    """The ``captions`` table of ``calls``: every candidate, its consensus score, the selected
    one (the other arguments are :class:`Selector`'s)."""
    with Selector(*args, **kwargs) as selector:
        return selector.table(calls)


def warm_up() -> None:
    """Load WordNet and MiniLM, which consensus scoring needs (their errors, if any, are
    reported when scoring really needs them)."""
    from urbangeo.captions.capture import load_minilm
    from urbangeo.captions.wordnet import wordnet_available

    wordnet_available()
    with contextlib.suppress(Exception):  # reported where scoring loads it
        load_minilm()


def consensus_parser(parser: str = "auto", gpkg: Path | None = None) -> Any:
    """The stage's scene-graph parser, its parses cached in ``caption_parses.jsonl`` beside
    the GeoPackage."""
    from urbangeo.captions.parse_cache import CachedParser
    from urbangeo.captions.scenegraph import get_parser

    cache_file = gpkg.parent / PARSES_JSONL if gpkg is not None else None
    return CachedParser(get_parser(parser), cache_file)


def consensus_scorer(cached: Any) -> Any:
    """A CAPTURE scorer for the stage: synonym matching when WordNet is set up (else a
    warning), parses by ``cached``, the stage's :func:`consensus_parser`."""
    from urbangeo.captions.capture import CaptureScorer
    from urbangeo.captions.wordnet import wordnet_available

    synonyms = wordnet_available()
    if not synonyms:
        message(
            "WordNet is not set up: CAPTURE runs without synonym matching "
            "(run `urbangeo captions setup` once to add it).",
            level="warning",
        )
    return CaptureScorer(parser=cached, synonyms=synonyms, soft=True)
