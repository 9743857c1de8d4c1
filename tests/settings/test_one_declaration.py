"""Every stage setting is declared once: the CLI, `urbangeo run`, the Python API and the QGIS
plugin all take their defaults, choices and flags from ``urbangeo.settings``."""

from __future__ import annotations

import inspect

import click
import pytest

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.pipeline import resolve_config
from urbangeo.qgisplugin import plugin_stages
from urbangeo.settings import DEFAULT_PROFILE, PROFILES, STAGE_SETTINGS, TrainSettings
from urbangeo.stage import STAGE_FUNCTIONS, stage_function
from urbangeo_cli.main import cli

COMMANDS = {"map": "map"}


def _command(stage: str) -> click.Command:
    return cli.commands[COMMANDS.get(stage, stage)]


def _cli_default(option: click.Option, field) -> object:
    default = option.default
    if default is None or type(default).__name__ == "Sentinel":  # click's UNSET
        return None
    if field.type is tuple and not field.spec.multiple and isinstance(default, str):
        return STAGE_SETTINGS_FIELD_PARSE(field, default)
    if option.multiple:
        return tuple(default) or None
    return default


def STAGE_SETTINGS_FIELD_PARSE(field, text):
    from urbangeo.settings._base import _check

    return _check(field, text, "test")


def test_stages_functions_and_settings_cover_the_same_stages():
    assert tuple(STAGE_SETTINGS) == tuple(STAGE_FUNCTIONS) == C.STAGES


#: Every stage's command and function are made from the declaration.
CONVERTED = C.STAGES


@pytest.mark.parametrize("stage", CONVERTED)
def test_cli_options_are_the_declaration(stage):
    cls = STAGE_SETTINGS[stage]
    options = {p.name: p for p in _command(stage).params if isinstance(p, click.Option)}
    for field in cls.fields():
        if not field.spec.cli:
            assert field.name not in options
            continue
        option = options[field.name]
        assert field.flag in option.opts + option.secondary_opts, (stage, field.name)
        assert _cli_default(option, field) == field.default, (stage, field.name)
        if field.spec.choices is not None and not callable(field.spec.choices):
            assert option.metavar == "[" + "|".join(field.spec.choices) + "]", (stage, field.name)


@pytest.mark.parametrize("stage", CONVERTED)
def test_python_api_takes_the_declaration(stage):
    func = stage_function(stage)
    assert func.settings_class is STAGE_SETTINGS[stage]
    params = inspect.signature(func).parameters
    # no defaults of its own: every setting comes from the declaration
    assert set(params) & set(STAGE_SETTINGS[stage].names()) == set()


def test_run_defaults_are_the_named_profile_over_the_declaration():
    config = resolve_config({})
    demo = PROFILES[DEFAULT_PROFILE]
    for stage in C.STAGES:
        settings = STAGE_SETTINGS[stage].from_mapping(config[stage])
        for field in STAGE_SETTINGS[stage].fields():
            expected = demo.get(stage, {}).get(field.name, field.default)
            if stage == "embed" and field.name == "name":
                expected = "urbanln"  # the model this run trains
            value = getattr(settings, field.name)
            if isinstance(expected, list):
                expected = tuple(expected)
            assert value == expected, (stage, field.name)
    bare = resolve_config({}, profile_name="none")
    assert all(not values for stage, values in bare.items() if stage != "embed")


def test_plugin_parameters_are_the_declaration():
    for name, stage in plugin_stages()["stages"].items():
        fields = {f.name.upper(): f for f in STAGE_SETTINGS[name].fields()}
        for param in stage["params"]:
            if param["name"] in ("GPKG", "OVERWRITE", "RESUME"):
                continue
            field = fields[param["name"]]
            assert param["flag"] == field.flag
            default = field.default
            if isinstance(default, tuple):
                default = ",".join(map(str, default))
            assert param["default"] == default, (name, param["name"])
            if param["kind"] == "enum":
                assert tuple(param["options"]) == field.spec.choice_list()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": "ten"}, "must be a whole number"),
        ({"epochs": 2.7}, "must be a whole number"),
        ({"lr": float("inf")}, "finite"),
        ({"lr": float("nan")}, "finite"),
        ({"seed": 10**20}, "at most"),
        ({"mode": "fast"}, "not one of the choices"),
        ({"epoks": 3}, "Unknown setting"),
        ({"batch_size": 0}, "at least 1"),
    ],
)
def test_run_toml_values_are_checked_before_any_work(values, message):
    with pytest.raises(InputError, match=message):
        resolve_config({"train": values})
    with pytest.raises(InputError, match=message):
        TrainSettings.from_mapping(values)


def test_a_cpu_never_trains_a_large_model_from_random_weights_silently():
    with pytest.raises(InputError, match="from a random init on a CPU"):
        TrainSettings(model="ViT-B-16").check_device("cpu")
    TrainSettings(model="ViT-B-16", from_scratch=True).check_device("cpu")
    TrainSettings(model="ViT-B-16", pretrained="openai").check_device("cpu")
    TrainSettings().check_device("cpu")  # the declared default is the tiny model
    TrainSettings(model="ViT-B-16").check_device("cuda")
