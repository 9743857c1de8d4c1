"""Every stage's settings, declared once (type, default, choices, unit, help).

The ``urbangeo`` command's options, ``run.toml``'s validation, the Python API's keyword arguments
and the QGIS plugin's parameters are all made from these classes. Named profiles
(:mod:`urbangeo.settings.profiles`) are sets of values on top of the declared defaults.
Importing this package is cheap: no torch, no GDAL.
"""

from __future__ import annotations

from urbangeo.settings._base import Field, Spec, StageSettings, setting
from urbangeo.settings.captions import CaptionSettings
from urbangeo.settings.downstream import (
    ClusterSettings,
    IndicatorsSettings,
    MapSettings,
    PredictSettings,
)
from urbangeo.settings.geo import GridSettings, SampleSettings
from urbangeo.settings.imagery import StreetviewSettings, TilesSettings
from urbangeo.settings.model import EmbedSettings, TrainSettings
from urbangeo.settings.profiles import DEFAULT_PROFILE, PROFILES, profile

#: Each stage's settings class, in pipeline order.
STAGE_SETTINGS: dict[str, type[StageSettings]] = {
    cls.stage: cls
    for cls in (
        GridSettings,
        SampleSettings,
        TilesSettings,
        StreetviewSettings,
        CaptionSettings,
        TrainSettings,
        EmbedSettings,
        IndicatorsSettings,
        PredictSettings,
        ClusterSettings,
        MapSettings,
    )
}

__all__ = [
    "DEFAULT_PROFILE",
    "PROFILES",
    "STAGE_SETTINGS",
    "CaptionSettings",
    "ClusterSettings",
    "EmbedSettings",
    "Field",
    "GridSettings",
    "IndicatorsSettings",
    "MapSettings",
    "PredictSettings",
    "SampleSettings",
    "Spec",
    "StageSettings",
    "StreetviewSettings",
    "TilesSettings",
    "TrainSettings",
    "profile",
    "setting",
]
