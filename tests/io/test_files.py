"""Small file helpers: folders a failed command created are removed, others are kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from urbangeo.io.files import ensure_writable_file, new_folders_removed_on_error


def test_a_failed_command_leaves_no_new_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "run.gpkg"
    with pytest.raises(RuntimeError), new_folders_removed_on_error(target):
        ensure_writable_file(target)  # creates a/b
        assert target.parent.is_dir()
        raise RuntimeError("the work failed")
    assert not (tmp_path / "a").exists()


def test_folders_that_hold_something_or_existed_stay(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "run.gpkg"
    with pytest.raises(KeyboardInterrupt), new_folders_removed_on_error(target):
        ensure_writable_file(target)
        (tmp_path / "a" / "b" / "partial.png").write_bytes(b"x")
        raise KeyboardInterrupt
    assert (tmp_path / "a" / "b" / "partial.png").exists()

    existing = tmp_path / "old"
    existing.mkdir()
    with pytest.raises(ValueError), new_folders_removed_on_error(existing / "run.gpkg"):
        raise ValueError
    assert existing.is_dir()


def test_success_keeps_the_folders(tmp_path: Path) -> None:
    target = tmp_path / "new" / "run.gpkg"
    with new_folders_removed_on_error(target):
        ensure_writable_file(target)
        target.write_bytes(b"")
    assert target.exists()
