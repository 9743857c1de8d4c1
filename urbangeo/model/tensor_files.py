"""Files of tensors (checkpoints, weights) read with ``torch.load``: tensors only, onto the CPU,
and an :class:`~urbangeo.errors.InputError` that names the file when it cannot be read."""

from __future__ import annotations

import os
from typing import Any

import torch

from urbangeo.errors import InputError


def load_tensors(
    path: str | os.PathLike, *, what: str, hint: str | None = None, mmap: bool = False
) -> Any:
    """What ``torch.save`` wrote to ``path`` (``weights_only``: no code runs), on the CPU.

    ``mmap``: memory-mapped where the file allows it (torch.save's zip format), so that only
    what is used of a large file is read. A file that cannot be read raises an
    :class:`InputError` naming it as ``what`` (e.g. "the checkpoint"), with ``hint``.
    """
    try:
        if mmap:
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # files not in torch.save's zip format cannot be mapped
                pass
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(
            f"Cannot read {what} {path} ({type(exc).__name__}: {exc}).", hint=hint
        ) from exc
