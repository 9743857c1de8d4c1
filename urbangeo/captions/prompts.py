"""Prompts of the caption stage: the UrbanLN paper's wording as defaults, overridable from a file.

The paper prints its satellite prompt (Figure 7). It shows no street-view prompt, so the
street-view default keeps the satellite prompt's wording and swaps its four aspects for those
the paper's street-view caption (Figure 8) covers: functional zoning, road design, human
activity and natural elements. The local and merge prompts serve the divide-and-conquer
refinement, whose wording the paper describes but does not print.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from urbangeo import constants as C
from urbangeo.errors import InputError

SATELLITE_PROMPT = (
    "You are an expert in urban analysis. Please describe the provided satellite image in a "
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

KEYS = ("satellite", "streetview", "local", "merge")


@dataclass(frozen=True)
class Prompts:
    """The prompt for each image kind and for the refinement steps."""

    satellite: str = SATELLITE_PROMPT
    streetview: str = STREETVIEW_PROMPT
    local: str = LOCAL_PROMPT
    merge: str = MERGE_PROMPT

    def for_kind(self, kind: str) -> str:
        """The long-caption prompt for an image kind (``satellite`` or ``streetview``)."""
        if kind == C.KIND_STREETVIEW:
            return self.streetview
        return self.satellite


def load_prompts(path: str | os.PathLike | None = None) -> Prompts:
    """The default prompts, with those in ``path`` replacing them.

    ``path`` is a TOML or JSON file with any of the keys ``satellite``, ``streetview``,
    ``local``, ``merge``, or a plain text file used for both satellite and street-view images.
    """
    prompts = Prompts()
    if path is None:
        return prompts
    path = Path(path)
    hint = (
        "Give a .toml or .json file with keys satellite, streetview, local, merge (any of "
        "them), or a .txt file with one prompt for every image."
    )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"Cannot read the prompt file {path}: {exc.strerror}.", hint=hint) from exc
    if path.suffix.lower() not in (".toml", ".json"):
        if not text.strip():
            raise InputError(f"The prompt file {path} is empty.", hint=hint)
        return replace(prompts, satellite=text.strip(), streetview=text.strip())
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"The prompt file {path} is not valid: {exc}.", hint=hint) from exc
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
