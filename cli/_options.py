"""Command-line options made from the stage settings' declarations (``urbangeo.settings``).

Each setting becomes one option, with its type, bounds, choices, unit and help as declared; the
command receives the values the user gave, and :func:`settings_from` turns them into the stage's
settings object (on top of ``--profile`` when given). Options that are not settings (the run's
GeoPackage, ``--overwrite``) are declared once here too.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from urbangeo.errors import UrbangeoWarning
from urbangeo.settings import PROFILES, StageSettings, profile
from urbangeo.settings._base import Field
from urbangeo_cli._common import overwrite_option, stage_command

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S", bound=StageSettings)

_DEPRECATED_PREFIX = "deprecated__"

#: Option types of paths: a file (it may not exist yet), an existing file, a folder.
FILE = click.Path(dir_okay=False, path_type=Path)
EXISTING_FILE = click.Path(dir_okay=False, exists=True, path_type=Path)
FOLDER = click.Path(file_okay=False, path_type=Path)


def _click_type(f: Field) -> Any:
    """Paths as paths; everything else as text, checked by the settings themselves, so that a
    bad value gives urbangeo's error (exit 1, a JSON event with --progress json), not click's."""
    kind = f.item if f.type is tuple else f.type
    if kind is Path:
        return click.Path(file_okay=not f.spec.folder, dir_okay=f.spec.folder, path_type=Path)
    return click.STRING


def _metavar(f: Field) -> str | None:
    """The choices as ``[a|b|c]`` (registries' names are known without importing any
    implementation), else the unit."""
    if f.spec.choices is not None:
        return "[" + "|".join(f.spec.choice_list() or ()) + "]"
    return f.spec.unit


def _option(f: Field) -> Callable[[F], F]:
    spec = f.spec
    flag = f.flag
    kwargs: dict[str, Any] = {"help": spec.help}
    if _metavar(f):
        kwargs["metavar"] = _metavar(f)
    if f.type is bool:
        decls = [f"{flag}/--no-{flag[2:]}" if f.default else flag, f.name]
        kwargs.update(default=f.default, show_default=False, is_flag=True)
        if f.default:
            kwargs["show_default"] = True
    elif f.type is tuple and spec.multiple:
        decls = [flag, f.name]
        kwargs.update(multiple=True, type=_click_type(f))
    elif f.type is tuple:
        decls = [flag, f.name]
        kwargs.update(type=click.STRING)
        if f.default is not None:
            kwargs.update(default=",".join(map(str, f.default)), show_default=True)
    else:
        decls = [flag, f.name]
        kwargs.update(type=_click_type(f))
        if f.default is not None:
            kwargs.update(default=f.default, show_default=True)
    return click.option(*decls, **kwargs)


def _deprecated_option(f: Field, old: str) -> Callable[[F], F]:
    kind = click.STRING if f.type is tuple else _click_type(f)
    if f.type is bool:
        return click.option(old, _DEPRECATED_PREFIX + f.name, is_flag=True, hidden=True)
    return click.option(old, _DEPRECATED_PREFIX + f.name, type=kind, hidden=True)


def settings_options(
    cls: type[StageSettings], *, exclude: Sequence[str] = (), with_profile: bool = True
) -> Callable[[F], F]:
    """One option per command-line setting of ``cls`` (and ``--profile``)."""

    def decorate(func: F) -> F:
        for f in reversed(cls.fields()):
            if not f.spec.cli or f.name in exclude:
                continue
            for old in f.spec.deprecated:
                func = _deprecated_option(f, old)(func)
            func = _option(f)(func)
        if with_profile:
            func = click.option(
                "--profile",
                "profile_name",
                type=click.Choice(tuple(PROFILES)),
                help="Start from a named set of settings (see `urbangeo run --help`); options "
                "given here override it.",
            )(func)
        return func

    return decorate


def settings_from(cls: type[S], values: dict[str, Any]) -> S:
    """The settings of the options the user gave (``values`` are the command's keyword
    arguments; they are removed from it), on top of ``--profile``'s."""
    ctx = click.get_current_context()
    chosen = dict(profile(values.pop("profile_name", None)).get(cls.stage, {}))
    for f in cls.fields():
        for old in f.spec.deprecated:
            value = values.pop(_DEPRECATED_PREFIX + f.name, None)
            if value not in (None, False):
                warnings.warn(
                    f"{old} is deprecated; use {f.flag} (the old spelling goes in the next "
                    "release).",
                    UrbangeoWarning,
                    stacklevel=2,
                )
                chosen[f.name] = value
        if f.name not in values:
            continue
        value = values.pop(f.name)
        if ctx.get_parameter_source(f.name) in (ParameterSource.DEFAULT, None):
            continue
        if f.type is tuple and f.spec.multiple:
            value = tuple(value) or None
        chosen[f.name] = value
    return cls.from_mapping(chosen, where=f"the options of `urbangeo {cls.stage}`")


def gpkg_option(help_text: str, *, required: bool = True, legacy_o: bool = False) -> Callable:
    """``--gpkg``: the run's GeoPackage (``-o`` stays a hidden, deprecated spelling where it
    meant this)."""

    def decorate(func: F) -> F:
        func = click.option(
            "--gpkg",
            "gpkg",
            required=required and not legacy_o,
            type=FILE,
            help=help_text,
        )(func)
        if legacy_o:
            func = click.option(
                "-o",
                "legacy_gpkg",
                hidden=True,
                type=FILE,
            )(func)
        return func

    return decorate


def gpkg_stage_command(
    cls: type[StageSettings], gpkg_help: str
) -> Callable[[Callable[..., Any]], click.Command]:
    """The command of a stage that works on the run's GeoPackage: ``--gpkg`` (``-o`` its
    deprecated spelling) described by ``gpkg_help``, the settings of ``cls`` (with
    ``--profile``), ``--overwrite``, and :func:`~urbangeo_cli._common.stage_command`'s options."""

    def decorate(func: Callable[..., Any]) -> click.Command:
        func = overwrite_option(stage_command(func))
        func = gpkg_option(gpkg_help, legacy_o=True)(settings_options(cls)(func))
        return click.command()(func)

    return decorate


def resolve_gpkg(gpkg: Path | None, legacy: Path | None, *, required: bool = True) -> Path | None:
    """The GeoPackage of ``--gpkg`` or of the deprecated ``-o``."""
    if legacy is not None:
        warnings.warn(
            "-o for the run's GeoPackage is deprecated; use --gpkg (-o names outputs only).",
            UrbangeoWarning,
            stacklevel=2,
        )
        gpkg = gpkg or legacy
    if gpkg is None and required:
        raise click.UsageError("Missing option '--gpkg'.")
    return gpkg


def override_options(cls: type[StageSettings], names: Sequence[str]) -> Callable[[F], F]:
    """Options for some settings of ``cls`` as ``urbangeo run`` overrides: the same flags,
    types and help as the stage command's, no default (the profile's applies); the command
    receives them as ``stage__name``."""
    fields = {f.name: f for f in cls.fields()}

    def decorate(func: F) -> F:
        for name in reversed(names):
            f = fields[name]
            kwargs: dict[str, Any] = {"help": f"[{cls.stage}] {f.spec.help}"}
            if _metavar(f):
                kwargs["metavar"] = _metavar(f)
            if f.type is bool:
                kwargs.update(is_flag=True, default=None)
            elif f.type is tuple:
                kwargs["type"] = click.STRING
            else:
                kwargs["type"] = _click_type(f)
            func = click.option(f.flag, f"{cls.stage}__{name}", **kwargs)(func)
        return func

    return decorate
