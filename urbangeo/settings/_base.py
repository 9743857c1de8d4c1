"""The declaration of a stage's settings: one typed dataclass field per setting.

Each field carries a :class:`Spec` (help text, unit, choices, bounds, how it is offered on the
command line and in the QGIS plugin). From these declarations come the ``urbangeo`` command's
options (``urbangeo_cli._options``), the validation of ``run.toml`` and of the Python API's
keyword arguments (:meth:`StageSettings.from_mapping`), and the QGIS plugin's parameters
(:meth:`StageSettings.describe`, written as JSON when the plugin is built). This module imports
nothing heavy: no torch, no GDAL.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from urbangeo.errors import InputError, UrbangeoWarning

#: The key of a field's :class:`Spec` in its ``dataclasses.field`` metadata.
SPEC = "urbangeo"

#: The largest seed numpy and torch accept.
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Spec:
    """How one setting is described, checked and offered."""

    help: str
    #: What the number or text stands for on the command line (METRES, PIXELS, NAME...).
    unit: str | None = None
    #: Allowed values, or a function giving them (a registry's names, read when needed).
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None
    min: float | None = None
    max: float | None = None
    #: Whether ``min`` itself is refused (e.g. a positive length).
    min_open: bool = False
    #: The command-line flag, when it is not ``--`` plus the name with dashes.
    flag: str | None = None
    #: A repeatable flag (``--model a --model b``) for a tuple setting; otherwise a tuple is
    #: given as comma-separated values.
    multiple: bool = False
    #: For paths: an input that must exist when the stage starts, and whether it is a folder.
    exists: bool = False
    folder: bool = False
    #: Offered by the ``urbangeo`` command (False: Python API and run.toml only).
    cli: bool = True
    #: The label of the QGIS plugin's parameter, for the settings the plugin offers.
    plugin: str | None = None
    #: The plugin's widget when the type does not say it: "vector" (a layer), "extent".
    plugin_kind: str | None = None
    #: Kept out of the stage's fingerprint (how, not what: threads, device...).
    runtime: bool = False
    #: Older spellings of the flag, still accepted for one release with a deprecation message.
    deprecated: tuple[str, ...] = ()
    #: Older spellings of values (old → new; for choices), still accepted for one release with
    #: a deprecation message and replaced by the new spelling.
    value_aliases: Mapping[str, str] | None = None

    def choice_list(self) -> tuple[str, ...] | None:
        """The allowed values (calling a lazy list)."""
        if self.choices is None:
            return None
        return tuple(self.choices()) if callable(self.choices) else tuple(self.choices)


def setting(default: Any = None, help: str = "", **spec: Any) -> Any:
    """A settings field with its :class:`Spec` (keyword arguments are Spec's)."""
    meta = {SPEC: Spec(help=help, **spec)}
    if isinstance(default, list | dict | set):
        raise TypeError("Use a tuple for a setting with several values.")
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Field:
    """A setting as the CLI, the runner and the plugin see it."""

    name: str
    type: Any  # the base type: int, float, str, bool, Path, or tuple[...]
    optional: bool  # None is allowed
    item: Any  # for tuples: the item type
    default: Any
    spec: Spec

    @property
    def flag(self) -> str:
        return self.spec.flag or "--" + self.name.replace("_", "-")


S = TypeVar("S", bound="StageSettings")


def _unwrap(annotation: Any) -> tuple[Any, bool, Any]:
    """(base type, optional, tuple item type) of a field annotation."""
    optional = False
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        annotation = args[0] if len(args) == 1 else tuple(args)
    if isinstance(annotation, list | tuple):  # int | str and the like: kept as given
        return object, optional, None
    if typing.get_origin(annotation) is tuple:
        items = typing.get_args(annotation)
        return tuple, optional, items[0] if items else str
    return annotation, optional, None


@dataclass(frozen=True)
class StageSettings:
    """Base of every stage's settings. Subclasses are frozen dataclasses of :func:`setting`."""

    #: The stage these settings belong to (the section of run.toml, the command's name).
    stage: ClassVar[str] = ""

    def __init_subclass__(cls, stage: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if stage:  # class GridSettings(StageSettings, stage="grid")
            cls.stage = stage

    def __post_init__(self) -> None:
        for f in self.fields():
            object.__setattr__(self, f.name, _check(f, getattr(self, f.name), self._where(f)))
        self.check()

    def check(self) -> None:
        """Rules between settings (a subclass's own); raise :class:`InputError`."""

    @classmethod
    def _where(cls, f: Field) -> str:
        return f"[{cls.stage}] {f.name} ({f.flag})"

    @classmethod
    def fields(cls) -> list[Field]:
        """Every setting, in declaration order."""
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            base, optional, item = _unwrap(hints[f.name])
            spec = f.metadata.get(SPEC) or Spec(help="")
            out.append(Field(f.name, base, optional, item, f.default, spec))
        return out

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in cls.fields())

    @classmethod
    def from_mapping(cls: type[S], values: Mapping[str, Any], *, where: str = "") -> S:
        """Settings from ``values`` (run.toml's section, keyword arguments, CLI options).

        Unknown names and values of the wrong type are refused with an error naming them;
        ``None`` means the default.
        """
        known = set(cls.names())
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(
                f"Unknown setting(s) in {where or f'[{cls.stage}]'}: {', '.join(unknown)}.",
                hint=f"[{cls.stage}] takes: {', '.join(sorted(known))}.",
            )
        return cls(**{k: v for k, v in values.items() if v is not None})

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` (checked like any settings)."""
        return dataclasses.replace(self, **changes)

    def pick(self, *names: str) -> dict[str, Any]:
        """The settings ``names`` by name: the keyword arguments of a function whose parameters
        are named like these settings (a name that is not a setting is an error)."""
        missing = [n for n in names if n not in self.names()]
        if missing:
            raise AttributeError(f"{type(self).__name__} has no setting {', '.join(missing)}")
        return {name: getattr(self, name) for name in names}

    def to_dict(self, *, runtime: bool = True) -> dict[str, Any]:
        """Plain values (paths as text, tuples as lists) for run.toml and fingerprints."""
        out = {}
        for f in self.fields():
            if f.spec.runtime and not runtime:
                continue
            out[f.name] = _plain(getattr(self, f.name))
        return out

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Every setting as plain data: name, flag, type, default, choices, help, bounds."""
        rows = []
        for f in cls.fields():
            kind = "tuple" if f.type is tuple else getattr(f.type, "__name__", "any")
            if kind == "Path":
                kind = "folder" if f.spec.folder else "file"
            rows.append(
                {
                    "name": f.name,
                    "flag": f.flag,
                    "type": kind,
                    "item": getattr(f.item, "__name__", None),
                    "optional": f.optional,
                    "default": _plain(f.default),
                    "choices": list(f.spec.choice_list() or ()) or None,
                    "min": f.spec.min,
                    "max": f.spec.max,
                    "unit": f.spec.unit,
                    "help": f.spec.help,
                    "multiple": f.spec.multiple,
                    "cli": f.spec.cli,
                    "plugin": f.spec.plugin,
                    "plugin_kind": f.spec.plugin_kind,
                }
            )
        return rows


def _plain(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _type_error(where: str, value: Any, wanted: str) -> InputError:
    return InputError(f"{where} must be {wanted}, not {value!r}.")


def _scalar(value: Any, kind: Any, where: str) -> Any:
    if isinstance(value, str) and kind in (int, float) and value.strip():
        try:  # text from a comma-separated list
            value = float(value) if kind is float else int(value)
        except ValueError:
            raise _type_error(
                where, value, "a number" if kind is float else "a whole number"
            ) from None
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(where, value, "true or false")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
                return int(value)
            raise _type_error(where, value, "a whole number")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(where, value, "a number")
        value = float(value)
        if not math.isfinite(value):
            raise _type_error(where, value, "a finite number")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise _type_error(where, value, "text")
        return value
    if kind is Path:
        if not isinstance(value, str | os.PathLike) or not os.fspath(value):
            raise _type_error(where, value, "a file path")
        return Path(value)
    return value


def _check(f: Field, value: Any, where: str) -> Any:
    """``value`` converted to the field's type and checked against its spec."""
    if value is None:
        if f.optional:
            return None
        raise _type_error(where, value, "set")
    if f.type is tuple:
        if isinstance(value, str):  # "1,2,3" (and "640x480" for whole numbers)
            sep = r"[,xX]" if f.item is int else ","
            value = [v.strip() for v in re.split(sep, value) if v.strip()]
        if not isinstance(value, list | tuple):
            raise _type_error(where, value, "a list")
        value = tuple(_alias(f, _scalar(v, f.item, where), where) for v in value)
        for v in value:
            _bounds(f, v, where)
        return value
    value = _alias(f, _scalar(value, f.type, where), where)
    _bounds(f, value, where)
    return value


def _alias(f: Field, value: Any, where: str) -> Any:
    """``value`` in its current spelling (an old one is replaced, with a deprecation warning)."""
    aliases = f.spec.value_aliases
    if not aliases or not isinstance(value, str) or value not in aliases:
        return value
    new = aliases[value]
    warnings.warn(
        f"{where}: {value!r} is deprecated; use {new!r} (the old spelling goes in the next "
        "release).",
        UrbangeoWarning,
        stacklevel=2,
    )
    return new


def _bounds(f: Field, value: Any, where: str) -> None:
    spec = f.spec
    shown = _num(f.default) if isinstance(f.default, int | float) else _plain(f.default)
    hint = None if f.default is None else f"Try the default, {f.flag} {shown}."
    choices = spec.choice_list()
    if choices is not None and value not in choices:
        raise InputError(
            f"{where} is {value!r}, which is not one of the choices.",
            hint=f"Choose one of: {', '.join(map(str, choices))}.",
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    low = spec.min
    if low is not None and not (value > low if spec.min_open else value >= low):
        bound = f"more than {_num(low)}" if spec.min_open else f"at least {_num(low)}"
        raise InputError(f"{where} must be {bound}, not {_num(value)}.", hint=hint)
    if spec.max is not None and value > spec.max:
        raise InputError(f"{where} must be at most {_num(spec.max)}, not {_num(value)}.", hint=hint)


def _num(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e18:
        return f"{int(value):,}" if abs(value) >= 10_000 else str(int(value))
    return f"{value:g}"
