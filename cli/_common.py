"""Options and error handling shared by every command."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable
from typing import Any

import click

from urbangeo.errors import UrbangeoError, UrbangeoWarning
from urbangeo.progress import MODES, get_mode, message, set_mode

INTERRUPTED = (
    "Interrupted. Everything written before the interruption is intact; "
    "rerun the same command to continue."
)


def _show_warning(msg, category, filename, lineno, file=None, line=None) -> None:
    message(str(msg), level="warning")


def _fail(text: str, hint: str | None, code: int) -> None:
    if get_mode() == "json":
        event = {"event": "error", "text": text}
        if hint:
            event["hint"] = hint
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()
    click.echo(f"Error: {text}", err=True)
    if hint:
        click.echo(hint, err=True)
    sys.exit(code)


def stage_command(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--quiet`` and ``--progress`` and turn library errors into clear messages."""

    @click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
    @click.option(
        "--progress",
        "progress_mode",
        type=click.Choice(MODES),
        default="bar",
        show_default=True,
        help="How to show progress: bars on stderr, JSON lines on stdout (for programs such "
        "as the QGIS plugin), or none.",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, quiet: bool, progress_mode: str, **kwargs: Any) -> Any:
        set_mode("none" if quiet else progress_mode)
        previous = warnings.showwarning
        warnings.showwarning = _show_warning
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                warnings.simplefilter("always", UrbangeoWarning)
                warnings.showwarning = _show_warning
                return func(*args, **kwargs)
        except UrbangeoError as exc:
            _fail(exc.message, exc.hint, 1)
        except KeyboardInterrupt:
            _fail(INTERRUPTED, None, 130)
        finally:
            warnings.showwarning = previous

    return wrapper


def overwrite_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--overwrite``: replace layers that already exist."""
    return click.option(
        "--overwrite",
        is_flag=True,
        help="Replace this command's layers if the GeoPackage has them already "
        "(other layers are always kept).",
    )(func)
