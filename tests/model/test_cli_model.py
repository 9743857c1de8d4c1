"""The train and embed commands (cli/model.py), invoked directly with click's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.model.synthetic import make_run
from urbangeo import constants as C
from urbangeo.model import data, embed, encoders, training
from urbangeo.progress import set_mode
from urbangeo_cli import model as cli_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _reset_progress():
    yield
    set_mode("bar")


def test_choices_match_the_library() -> None:
    assert set(cli_model.TRAIN_MODES) == set(training.MODES)
    assert cli_model.TRAIN_PARTS == training.TRAIN_CHOICES
    assert cli_model.PAIR_KINDS == data.KIND_CHOICES
    assert cli_model.PRECISIONS == data.PRECISIONS
    assert tuple(cli_model.ENCODERS) == encoders.ENCODERS.names()
    assert cli_model.EMBED_KINDS == embed.EMBED_KINDS


@pytest.mark.parametrize("command", [cli_model.train, cli_model.embed])
def test_commands_explain_themselves(command) -> None:
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0 and "Examples:" in result.output


def test_train_then_embed_from_the_command_line(tmp_path: Path) -> None:
    gpkg = make_run(tmp_path / "run", n=12)
    runner = CliRunner()
    args = ["--gpkg", gpkg, "--model", "urbangeo-tiny-vit", "--epochs", "1", "--batch-size", "8"]
    args += ["--lr", "1e-3", "--queue-size", "16", "--workers", "0", "--progress", "json"]
    result = runner.invoke(cli_model.train, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert any(e["event"] == "progress" and e["task"] == "train" for e in events)
    assert any(e["event"] == "message" and "Trained" in e["text"] for e in events)
    assert (gpkg.parent / C.CHECKPOINTS_DIR / "urbanln" / "model.pt").is_file()

    again = runner.invoke(cli_model.train, [str(a) for a in args])
    assert again.exit_code == 1
    assert "already exists" in again.output and "--resume" in again.output

    result = runner.invoke(cli_model.embed, ["--gpkg", str(gpkg), "--workers", "0", "-q"])
    assert result.exit_code == 0, result.output
    assert (gpkg.parent / C.EMBEDDINGS_PARQUET).is_file()


def test_command_errors_are_clear(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli_model.train, ["--model", "urbangeo-tiny-vit"])
    assert result.exit_code == 1 and "--gpkg RUN.gpkg" in result.output
    result = runner.invoke(
        cli_model.train, ["--gpkg", str(tmp_path / "x.gpkg"), "--model", "ViT-B-17"]
    )
    assert result.exit_code == 1
    assert "Unknown model architecture 'ViT-B-17'" in result.output and "ViT-B-16" in result.output
