"""Old spellings of setting values (the image kind "satellite", now "overhead") still work for
one release, with a deprecation message, wherever settings come from."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from urbangeo import constants as C
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.pipeline import resolve_settings
from urbangeo.qgisplugin import plugin_stages
from urbangeo.settings import STAGE_SETTINGS, CaptionSettings, EmbedSettings, TrainSettings

DEPRECATED = r"'satellite' is deprecated; use 'overhead'"


def test_the_old_kind_is_accepted_with_a_message():
    with pytest.warns(UrbangeoWarning, match=DEPRECATED) as seen:
        assert TrainSettings(kind="satellite").kind == C.KIND_OVERHEAD
    assert "[train] kind (--kind)" in str(seen[0].message)  # names the setting
    with pytest.warns(UrbangeoWarning, match=DEPRECATED):
        assert EmbedSettings.from_mapping({"kind": "satellite"}).kind == C.KIND_OVERHEAD
    with pytest.warns(UrbangeoWarning, match=DEPRECATED):
        kinds = CaptionSettings(kinds=("satellite", C.KIND_STREETVIEW)).kinds
    assert kinds == (C.KIND_OVERHEAD, C.KIND_STREETVIEW)
    with pytest.warns(UrbangeoWarning, match=DEPRECATED):
        assert CaptionSettings.from_mapping({"kinds": "satellite"}).kinds == (C.KIND_OVERHEAD,)


def test_the_new_kind_and_other_values_give_no_message(recwarn):
    assert TrainSettings(kind=C.KIND_OVERHEAD).kind == C.KIND_OVERHEAD
    assert TrainSettings(kind="all").kind == "all"
    assert EmbedSettings(kind="concat").kind == "concat"
    assert not [w for w in recwarn if issubclass(w.category, UrbangeoWarning)]
    with pytest.raises(InputError, match="not one of the choices") as err:
        TrainSettings(kind="sat")
    assert "overhead" in err.value.hint and "satellite" not in err.value.hint


def test_run_toml_with_the_old_kind_runs_and_is_written_anew(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[train]\nkind = "satellite"\n[caption]\nkinds = ["satellite"]\n')
    with pytest.warns(UrbangeoWarning, match=DEPRECATED):
        values, settings = resolve_settings(toml)
    assert settings["train"].kind == C.KIND_OVERHEAD
    assert settings["caption"].kinds == (C.KIND_OVERHEAD,)
    # the run folder's run.toml gets the new spelling: the message is shown once
    assert values["train"]["kind"] == C.KIND_OVERHEAD
    assert values["caption"]["kinds"] == [C.KIND_OVERHEAD]


def test_the_cli_takes_the_old_kind_with_a_message(monkeypatch):
    from urbangeo.model import stages
    from urbangeo_cli import model as cli_model

    seen: list = []
    monkeypatch.setattr(stages, "embed_stage", lambda gpkg, s, **k: seen.append(s))
    result = CliRunner().invoke(cli_model.embed, ["--gpkg", "r.gpkg", "--kind", "satellite"])
    assert result.exit_code == 0, result.output
    assert seen[0].kind == C.KIND_OVERHEAD
    assert "'satellite' is deprecated; use 'overhead'" in result.output


def test_choices_offered_are_the_new_names():
    """The CLI's help, the declarations and the QGIS plugin's parameters offer "overhead",
    never "satellite"."""
    for stage, cls in STAGE_SETTINGS.items():
        for row in cls.describe():
            assert "satellite" not in (row["choices"] or []), (stage, row["name"])
    choices = {f.name: f.spec.choice_list() for f in TrainSettings.fields()}
    assert choices["kind"] == ("all", C.KIND_OVERHEAD, C.KIND_STREETVIEW)
    described = json.dumps(plugin_stages())
    assert "satellite" not in described.lower()
    assert "One overhead image per region" in described
