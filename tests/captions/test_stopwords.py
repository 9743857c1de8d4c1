import json
import zipfile

import pytest

from urbangeo.captions import stopwords
from urbangeo.errors import InputError


def _wheel(path, source: str):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("capture_metric/__init__.py", "import nltk\nnltk.download('x')\n")
        archive.writestr("capture_metric/stop_words.py", source)
    return path


def test_stop_words_are_read_from_the_wheel_without_importing_it(tmp_path, monkeypatch):
    wheel = _wheel(
        tmp_path / "capture_metric-0.1.13-py3-none-any.whl",
        "\nstop_words_list = [\n    'background',\n    'scene',\n]\n",
    )
    monkeypatch.setenv("NLTK_DATA", str(tmp_path / "nltk"))
    path = stopwords.setup_stop_words(wheel=wheel)
    assert path == tmp_path / "nltk" / "urbangeo" / "capture_stop_words.json"
    assert json.loads(path.read_text())["stop_words"] == ["background", "scene"]
    assert stopwords.load_stop_words() == {"background", "scene"}
    assert {"background", "scene"} == stopwords.STOP_WORDS
    stopwords.load_stop_words.cache_clear()


def test_bad_wheel_and_missing_setup(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="has no stop_words_list"):
        stopwords.extract_stop_words(_wheel(tmp_path / "a.whl", "words = ['x']\n"))
    (tmp_path / "b.whl").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a capture-metric wheel"):
        stopwords.extract_stop_words(tmp_path / "b.whl")
    monkeypatch.setenv("NLTK_DATA", str(tmp_path / "empty"))
    stopwords.load_stop_words.cache_clear()
    with pytest.raises(InputError, match="not set up") as info:
        stopwords.load_stop_words()
    assert "urbangeo captions setup" in info.value.hint
    stopwords.load_stop_words.cache_clear()
