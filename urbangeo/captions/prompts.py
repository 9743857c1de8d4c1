"""Prompts of the caption stage: the UrbanLN paper's wording as defaults, overridable from a file.

The paper prints its satellite prompt (Figure 7); it is the overhead prompt of images from
aerial or satellite imagery (a raster, an XYZ imagery service). An overhead image rendered
from OpenStreetMap is called what it is (:data:`MAP_PROMPT`), and one of an unknown source
plainly an overhead image (:data:`OVERHEAD_PROMPT`); a prompt file's ``overhead`` replaces all
three. The paper shows no street-view prompt, so the street-view default keeps the satellite
prompt's wording and swaps its four aspects for those the paper's street-view caption
(Figure 8) covers: functional zoning, road design, human activity and natural elements. The
local and merge prompts serve the divide-and-conquer refinement, whose wording the paper
describes but does not print.
"""

from __future__ import annotations

import json
import os
import tomllib
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from urbangeo import constants as C
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.imagery.kinds import source_kind

SATELLITE_PROMPT = (
    "You are an expert in urban analysis. Please describe the provided satellite image in a "
    "single, coherent paragraph, focusing on the city's functional layout, road network design, "
    "human activity, and natural elements."
)
MAP_PROMPT = (
    "You are an expert in urban analysis. Please describe the provided overhead image, a map "
    "rendered from OpenStreetMap data, in a single, coherent paragraph, focusing on the city's "
    "functional layout, road network design, human activity, and natural elements."
)
OVERHEAD_PROMPT = (
    "You are an expert in urban analysis. Please describe the provided overhead image in a "
    "single, coherent paragraph, focusing on the city's functional layout, road network design, "
    "human activity, and natural elements."
)
STREETVIEW_PROMPT = (
    "You are an expert in urban analysis. Please describe the provided street-view image in a "
    "single, coherent paragraph, focusing on the street's functional zoning, road design, "
    "human activity, and natural elements."
)
LOCAL_PROMPT = (
    "You are an expert in urban analysis. This image is a crop of a larger {kind} image. "
    "Describe its main visual element in one short sentence."
)
MERGE_PROMPT = (
    "You are an expert in urban analysis. Here is a description of the provided {kind} image:\n"
    "{caption}\n\n"
    "These details were verified in parts of the image:\n{details}\n\n"
    "Rewrite the description as a single, coherent paragraph that keeps its structure and "
    "absorbs the verified details that it omits. Reply with the paragraph only."
)

KEYS = ("overhead", "streetview", "local", "merge")
#: Older spellings of a prompt file's keys (accepted for one release with a deprecation message).
LEGACY_KEYS = C.LEGACY_KINDS


def overhead_prompt(source: str | None) -> str:
    """The default prompt of an overhead image from ``source`` (column ``source`` of the images
    layer): the paper's for imagery, :data:`MAP_PROMPT` for a rendered OSM map, else
    :data:`OVERHEAD_PROMPT`."""
    what = source_kind(source)
    if what == "imagery":
        return SATELLITE_PROMPT
    return MAP_PROMPT if what == "map" else OVERHEAD_PROMPT


@dataclass(frozen=True)
class Prompts:
    """The prompt for each image kind and for the refinement steps (``overhead``: None picks
    the default by each image's source, :func:`overhead_prompt`)."""

    overhead: str | None = None
    streetview: str = STREETVIEW_PROMPT
    local: str = LOCAL_PROMPT
    merge: str = MERGE_PROMPT

    def for_kind(self, kind: str, *, source: str | None = None) -> str:
        """The long-caption prompt for an image kind (``overhead`` or ``streetview``) from
        ``source``."""
        if kind == C.KIND_STREETVIEW:
            return self.streetview
        return self.overhead if self.overhead is not None else overhead_prompt(source)


def load_prompts(path: str | os.PathLike | None = None) -> Prompts:
    """The default prompts, with those in ``path`` replacing them.

    ``path`` is a TOML or JSON file with any of the keys ``overhead``, ``streetview``,
    ``local``, ``merge`` (``satellite``: the old spelling of ``overhead``), or a plain text file
    used for both overhead and street-view images.
    """
    prompts = Prompts()
    if path is None:
        return prompts
    path = Path(path)
    hint = (
        "Give a .toml or .json file with keys overhead, streetview, local, merge (any of "
        "them), or a .txt file with one prompt for every image."
    )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"Cannot read the prompt file {path}: {exc.strerror}.", hint=hint) from exc
    if path.suffix.lower() not in (".toml", ".json"):
        if not text.strip():
            raise InputError(f"The prompt file {path} is empty.", hint=hint)
        return replace(prompts, overhead=text.strip(), streetview=text.strip())
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"The prompt file {path} is not valid: {exc}.", hint=hint) from exc
    if isinstance(data, dict):
        data = _current_keys(path, data, hint)
    unknown = sorted(set(data) - set(KEYS)) if isinstance(data, dict) else ["(not a table)"]
    bad = [k for k in KEYS if k in data and not (isinstance(data[k], str) and data[k].strip())]
    if unknown or bad:
        raise InputError(
            f"The prompt file {path} has unknown keys {unknown} or empty prompts {bad}.", hint=hint
        )
    for key in ("local", "merge"):
        if key in data:
            _check_fields(path, key, data[key])
    return replace(prompts, **{k: data[k].strip() for k in KEYS if k in data})


def _current_keys(path: Path, data: dict, hint: str) -> dict:
    """``data`` with the old spellings of keys replaced (with a deprecation warning)."""
    out = dict(data)
    for old, new in LEGACY_KEYS.items():
        if old not in out:
            continue
        if new in out:
            raise InputError(
                f"The prompt file {path} has both '{old}' and '{new}'; '{old}' is the old name "
                f"of '{new}'.",
                hint=f"Keep '{new}' only. {hint}",
            )
        warnings.warn(
            f"The prompt file {path}: key '{old}' is deprecated; use '{new}' (the old spelling "
            "goes in the next release).",
            UrbangeoWarning,
            stacklevel=4,
        )
        out[new] = out.pop(old)
    return out


def _check_fields(path: Path, key: str, text: str) -> None:
    fields = {"local": ("kind",), "merge": ("kind", "caption", "details")}[key]
    try:
        text.format(**{f: "" for f in fields})
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(
            f"The '{key}' prompt in {path} has a bad placeholder ({exc}).",
            hint=f"It may use {', '.join('{' + f + '}' for f in fields)}; write {{{{ }}}} for "
            "literal braces.",
        ) from exc
