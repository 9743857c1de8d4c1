"""Settings of the ``caption`` stage: captioners, consensus, and each backend's options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.settings._base import MAX_SEED, setting
from urbangeo.settings.common import ChunkSettings, ShardSettings, WorkersSettings

#: How the caption of an image is chosen among its candidates (``--select``).
SELECT_MODES = ("capture", "first")
#: Scene-graph parsers for CAPTURE (``--parser``; :mod:`urbangeo.captions.scenegraph`).
PARSERS = ("auto", "rule", "factual")
#: The osm captioner's styles (its "models"; :mod:`urbangeo.captions.osm.describe`).
OSM_STYLES = ("planner", "observer", "analyst")
#: Metres around a street-view point whose OSM features describe it (``--radius``).
DEFAULT_CONTEXT_RADIUS_M = 75.0
#: The environment variable holding the openai backend's API key unless --api-key-env names one.
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
#: The most characters kept of one caption, far above any --max-tokens (a token is about four
#: characters): a longer reply (a runaway model, a server that ignores max_tokens) is cut to
#: this, flagged ``truncated`` in captions.jsonl and in the captions table, and warned about.
MAX_CAPTION_CHARS = 20_000


def captioner_names() -> tuple[str, ...]:
    """The registered captioners."""
    from urbangeo.captions import captioners

    return captioners.CAPTIONERS.names()


@dataclass(frozen=True)
class CaptionSettings(ShardSettings, ChunkSettings, WorkersSettings, stage="caption"):
    """``caption``: several captions per image and the consensus choice."""

    backend: str = setting(
        "osm",
        "osm: offline, from OpenStreetMap features; openai: an OpenAI-compatible endpoint "
        "(vLLM, Ollama, LM Studio, hosted); transformers: a local vision-language model.",
        choices=captioner_names,
        plugin="Captioner",
    )
    models: tuple[str, ...] | None = setting(
        None,
        "Model name; repeat for several captioners per image. osm: a style "
        f"({', '.join(OSM_STYLES)}; default all); transformers: a hub name or a local folder.",
        flag="--model",
        multiple=True,
        unit="NAME",
        plugin="Models / styles (comma-separated)",
    )
    prompts: Path | None = setting(
        None,
        "Prompts replacing the paper's: a .toml/.json with keys overhead, streetview, local, "
        "merge, or a .txt used for every image.",
        exists=True,
    )
    kinds: tuple[str, ...] | None = setting(
        None,
        "Caption only these image kinds (default both).",
        flag="--kind",
        multiple=True,
        choices=(C.KIND_OVERHEAD, C.KIND_STREETVIEW),
        value_aliases=C.LEGACY_KINDS,
    )
    limit: int | None = setting(None, "Caption only the first N images.", unit="N", min=0)
    concurrency: int = setting(
        4,
        "Requests in flight at once (openai: at each --base-url without #N).",
        unit="N",
        min=1,
        max=256,
    )
    select: str = setting(
        "capture",
        "capture: keep the caption with the best mean CAPTURE score against the image's other "
        "captions; first: keep the first model's (no scoring).",
        choices=SELECT_MODES,
    )
    parser: str = setting(
        "auto",
        "Scene-graph parser for CAPTURE: FACTUAL (T5, if its weights are on this machine) or "
        "the offline rule-based spaCy parser.",
        choices=PARSERS,
    )
    refine: bool = setting(
        False,
        "Divide-and-conquer refinement: SAM crops, local captions, OWLv2-checked phrases, "
        "merged by the same model (needs the transformers weights of SAM and OWLv2).",
    )
    sam_model: str | None = setting(None, "refine: SAM weights (hub name or folder).", unit="NAME")
    owl_model: str | None = setting(
        None, "refine: OWLv2 weights (hub name or folder).", unit="NAME"
    )
    base_url: tuple[str, ...] | None = setting(
        None,
        "openai: the API root, e.g. http://localhost:8000/v1. Repeat for replicas serving the "
        "same models (vLLM on several GPUs), each as URL#N to give it N requests in flight "
        "(default --concurrency); each call goes to the least-loaded one, and one that fails "
        "is set aside with a warning.",
        unit="URL[#N]",
        multiple=True,
        plugin="Endpoint URLs (openai, comma-separated)",
    )
    api_key_env: str | None = setting(
        None,
        f"openai: the environment variable holding the API key (default {DEFAULT_API_KEY_ENV}, "
        "if set). The key itself is never taken on the command line, logged or stored.",
        unit="VAR",
    )
    timeout: float = setting(
        120.0, "openai: seconds to wait for a reply.", unit="SECONDS", min=0, min_open=True
    )
    retries: int = setting(
        5,
        "Tries after the first on HTTP 429/5xx and timeouts, with exponential backoff "
        "(Retry-After honoured).",
        unit="N",
        min=0,
        max=20,
        deprecated=("--max-retries",),
    )
    max_tokens: int = setting(
        512,
        f"Caption length cap (tokens). A reply longer than {MAX_CAPTION_CHARS:,} characters "
        "is cut and flagged (column truncated).",
        unit="TOKENS",
        min=1,
        max=32768,
    )
    temperature: float | None = setting(
        None, "Sampling temperature (server default if unset).", unit="TEMP", min=0, max=2
    )
    osm: Path | None = setting(
        None, "osm: the .osm.pbf extract (default: the run's bundled city).", exists=True
    )
    city: str | None = setting(None, "osm: take features from this bundled city.", unit="NAME")
    seed: int = setting(0, "osm: wording seed.", unit="N", min=0, max=MAX_SEED)
    radius: float = setting(
        DEFAULT_CONTEXT_RADIUS_M,
        "osm: street-view points are described from the features this close.",
        unit="METRES",
        min=0,
        min_open=True,
    )
    device: str | None = setting(
        None, "transformers: cpu, cuda, cuda:1 (default: GPU if any).", unit="DEVICE"
    )

    def check(self) -> None:
        if self.base_url:
            from urbangeo.captions.endpoints import parse_endpoints

            parse_endpoints(self.base_url, self.concurrency)  # bad URLs and #N, before any work
        if self.backend == "osm" and self.models:
            bad = sorted(set(self.models) - set(OSM_STYLES))
            if bad:
                raise InputError(
                    f"[caption] the osm captioner has no style {', '.join(bad)}.",
                    hint=f"Styles: {', '.join(OSM_STYLES)}.",
                )

    def to_dict(self, *, runtime: bool = True) -> dict[str, Any]:
        """As :meth:`StageSettings.to_dict`; for the fingerprint (``runtime=False``) the
        endpoints are where, not what: only the first URL counts, without ``#N``, as the one
        URL recorded before replicas existed (so those runs keep their fingerprint)."""
        out = super().to_dict(runtime=runtime)
        if not runtime:
            from urbangeo.captions.endpoints import fingerprint_url

            out["base_url"] = fingerprint_url(self.base_url)
        return out
