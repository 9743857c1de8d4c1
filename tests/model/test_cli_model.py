"""The train and embed commands (cli/model.py), invoked directly with click's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.model.synthetic import make_run
from urbangeo import constants as C
from urbangeo.progress import set_mode
from urbangeo_cli import model as cli_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _reset_progress():
    yield
    set_mode("bar")


#: Every flag `urbangeo train` took before its options came from the declaration, with a
#: value, and the setting (and value) it must still give.
OLD_TRAIN_FLAGS = [
    ("--kind", "satellite", "kind", C.KIND_OVERHEAD),  # the kind's old name
    ("--mode", "no-ipsi", "mode", "no-ipsi"),
    ("--model", "urbangeo-tiny-vit-96", "model", "urbangeo-tiny-vit-96"),
    ("--pretrained", "openai", "pretrained", "openai"),
    ("--context-length", "100", "context_length", 100),
    ("--epochs", "3", "epochs", 3),
    ("--batch-size", "5", "batch_size", 5),
    ("--accum-steps", "2", "accum_steps", 2),
    ("--lr", "1e-5", "lr", 1e-5),
    ("--weight-decay", "0.01", "weight_decay", 0.01),
    ("--warmup", "7", "warmup_steps", 7),
    ("--grad-clip", "1.5", "grad_clip", 1.5),
    ("--train", "last-n", "train", "last-n"),
    ("--last-n", "3", "train_last_n", 3),
    ("--queue-size", "32", "queue_size", 32),
    ("--momentum", "0.9", "momentum", 0.9),
    ("--mu", "0.25", "mu", 0.25),
    ("--augment", None, "augment", True),
    ("--image-norm", "data", "image_norm", "data"),
    ("--seed", "4", "seed", 4),
    ("--val-fraction", "0.3", "val_fraction", 0.3),
    ("--checkpoint-every", "9", "checkpoint_every", 9),
    ("--workers", "1", "num_workers", 1),
    ("--precision", "fp32", "precision", "fp32"),
    ("--device", "cpu", "device", "cpu"),
    ("--name", "mine", "name", "mine"),
]
OLD_EMBED_FLAGS = [
    ("--encoder", "random", "encoder", "random"),
    ("--name", "mine", "name", "mine"),
    ("--model", "urbangeo-tiny-vit", "model", "urbangeo-tiny-vit"),
    ("--pretrained", "openai", "pretrained", "openai"),
    ("--kind", "satellite", "kind", C.KIND_OVERHEAD),  # the kind's old name
    ("--batch-size", "8", "batch_size", 8),
    ("--workers", "1", "num_workers", 1),
    ("--precision", "fp32", "precision", "fp32"),
    ("--device", "cpu", "device", "cpu"),
    ("--seed", "3", "seed", 3),
]


def _args(flags: list[tuple]) -> list[str]:
    return [a for flag, value, _, _ in flags for a in (flag, value) if a is not None]


def test_every_old_flag_spelling_still_works(monkeypatch, tmp_path: Path) -> None:
    """The options come from the declaration now; every flag of the hand-written options
    (train, embed) still parses to the setting it set."""
    from urbangeo.model import stages

    seen: dict[str, tuple] = {}
    monkeypatch.setattr(stages, "train_stage", lambda *a, **k: seen.update(train=(a, k)))
    monkeypatch.setattr(stages, "embed_stage", lambda *a, **k: seen.update(embed=(a, k)))
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    runner = CliRunner()
    args = ["--gpkg", "run.gpkg", *_args(OLD_TRAIN_FLAGS), "--checkpoint", str(weights)]
    args += ["--max-steps", "5", "--resume", "--overwrite"]
    result = runner.invoke(cli_model.train, args)
    assert result.exit_code == 0, result.output
    (gpkg, settings), io = seen["train"]
    assert gpkg == Path("run.gpkg") and settings.checkpoint == str(weights)
    assert io == {"pairs": None, "resume": True, "overwrite": True, "max_steps": 5}
    for flag, _, name, value in OLD_TRAIN_FLAGS:
        assert getattr(settings, name) == value, flag

    args = ["--gpkg", "run.gpkg", *_args(OLD_EMBED_FLAGS), "--weights", str(weights)]
    result = runner.invoke(cli_model.embed, [*args, "--checkpoint", str(weights), "--overwrite"])
    assert result.exit_code == 0, result.output
    (gpkg, settings), io = seen["embed"]
    assert settings.weights == weights and settings.checkpoint == weights
    assert io == {"overwrite": True}
    for flag, _, name, value in OLD_EMBED_FLAGS:
        assert getattr(settings, name) == value, flag


def test_the_paper_profile_and_the_tiny_default(monkeypatch) -> None:
    from urbangeo.model import stages

    seen: list = []
    monkeypatch.setattr(stages, "train_stage", lambda gpkg, settings, **k: seen.append(settings))
    runner = CliRunner()
    assert runner.invoke(cli_model.train, ["--gpkg", "r.gpkg"]).exit_code == 0
    assert runner.invoke(cli_model.train, ["--gpkg", "r.gpkg", "--profile", "paper"]).exit_code == 0
    args = ["--gpkg", "r.gpkg", "--profile", "paper", "--lr", "1e-6"]
    assert runner.invoke(cli_model.train, args).exit_code == 0
    tiny, paper, tuned = seen
    assert (tiny.model, tiny.pretrained, tiny.lr) == ("urbangeo-tiny-vit", None, 3e-4)
    assert (paper.model, paper.pretrained, paper.lr) == ("ViT-B-16", "openai", 1e-7)
    assert (tuned.model, tuned.lr) == ("ViT-B-16", 1e-6)


def test_no_copied_choice_lists() -> None:
    for name in ("TRAIN_MODES", "TRAIN_PARTS", "PAIR_KINDS", "PRECISIONS", "ENCODERS"):
        assert not hasattr(cli_model, name), name
    assert not hasattr(cli_model, "EMBED_KINDS")


def test_bad_values_are_refused_by_the_settings(tmp_path: Path) -> None:
    runner = CliRunner()
    gpkg = str(tmp_path / "x.gpkg")
    for args, text in [
        (["--lr", "inf"], "finite"),
        (["--lr", "0"], "must be more than 0"),
        (["--epochs", "0"], "at least 1"),
        (["--mode", "clip"], "not one of the choices"),
        (["--checkpoint", str(tmp_path / "missing.pt")], "does not exist"),
    ]:
        result = runner.invoke(cli_model.train, ["--gpkg", gpkg, *args])
        assert result.exit_code == 1 and text in result.output, (args, result.output)
    assert not (tmp_path / "x.gpkg").exists()


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
