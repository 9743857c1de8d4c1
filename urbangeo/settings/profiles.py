"""Named profiles: sets of stage settings chosen together, as data.

``urbangeo run`` uses :data:`DEFAULT_PROFILE` unless told otherwise; any stage command takes
``--profile NAME`` too, so that ``urbangeo train --profile offline-demo`` trains exactly as the
default run does. A profile changes only what it names; everything else keeps the stage's
declared default.
"""

from __future__ import annotations

from typing import Any

from urbangeo import constants as C
from urbangeo.errors import InputError

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # The default city (central São Paulo, with real population, jobs and schools), fully
    # offline on a CPU in a few minutes: a 250 m grid (615 regions), rendered OSM tiles, the
    # OSM-grounded captioner in three styles with CAPTURE consensus, a tiny CLIP pre-trained
    # from scratch. Kotka and Helsinki (--city) have OSM-derived indicators instead.
    "offline-demo": {
        "grid": {"city": C.DEFAULT_CITY, "cell_size": 250.0},
        "tiles": {"size": 64},
        "caption": {"backend": "osm", "models": ["planner", "observer", "analyst"]},
        "train": {
            "model": "urbangeo-tiny-vit",
            "epochs": 40,
            "batch_size": 16,
            "lr": 3e-4,
            "queue_size": 64,
            "kind": C.KIND_OVERHEAD,
            # checkpoints by time (every 10 minutes of training, the default): a run of a few
            # minutes writes last.pt once, at the end (or on Ctrl-C)
        },
        "predict": {"seeds": 3},
    },
    # The paper's setting (UrbanLN): pretrained ViT-B/16 fine-tuned at a small learning rate on
    # street-view and overhead images with captions from OpenAI-compatible endpoints; needs the
    # weights (downloaded once), an endpoint and a GPU.
    "paper": {
        "grid": {"cell_size": 1000.0},
        "caption": {"backend": "openai"},
        "train": {"model": "ViT-B-16", "pretrained": "openai", "lr": 1e-7, "kind": "all"},
        "predict": {"seeds": 5},
    },
}

DEFAULT_PROFILE = "offline-demo"


def profile(name: str | None) -> dict[str, dict[str, Any]]:
    """The settings of profile ``name`` per stage ({} for None)."""
    if name is None:
        return {}
    if name not in PROFILES:
        raise InputError(f"Unknown profile {name!r}.", hint=f"Profiles: {', '.join(PROFILES)}.")
    return PROFILES[name]
