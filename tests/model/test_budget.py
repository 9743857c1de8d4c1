"""Training sized by work (issue #16): --steps, --samples or --epochs decide the run's length
and its schedule; checkpoints by time or step count; --stop-after, the new name of
--max-steps."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from tests.model.helpers import FAST_TRAIN as FAST
from tests.model.helpers import TINY
from tests.model.synthetic import make_run
from urbangeo import constants as C
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.model.stages import train_stage
from urbangeo.model.training import METRICS_CSV, load_train_state, train, warmup_cosine
from urbangeo.model.training import budget as budget_module
from urbangeo.model.training import trainer as trainer_module
from urbangeo.model.training.budget import (
    CheckpointClock,
    check_budget_keywords,
    lr_schedule,
    training_budget,
)
from urbangeo.pipeline import resolve_config
from urbangeo.settings import PROFILES, TrainSettings
from urbangeo_cli import model as cli_model

#: small_run's 24 regions at batch 8: 3 micro-batches (3 steps) per pass over the pairs.
PER_EPOCH = 3

pytestmark = pytest.mark.usefixtures("one_thread", "quiet_progress")


def _states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- the budget rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "world", "total", "epochs", "by"),
    [
        ({}, 1, 10 * 4, 10, "epochs"),  # the declared default: 10 passes
        ({"epochs": 3}, 1, 12, 3, "epochs"),
        ({"epochs": 3, "accum_steps": 3}, 1, 6, 3, "epochs"),  # 4 micro-batches: 2 steps
        ({"steps": 10}, 1, 10, 3, "steps"),  # the third pass stops part-way
        ({"steps": 10, "epochs": 40}, 1, 10, 3, "steps"),  # a profile's epochs give way
        ({"samples": 100}, 1, 13, 4, "samples"),  # ceil(100 / 8)
        ({"samples": 100, "accum_steps": 2}, 1, 7, 4, "samples"),  # ceil(100 / 16)
        ({"samples": 100}, 2, 7, 2, "samples"),  # ceil(100 / (8 x 2 processes))
        ({"samples": 64}, 1, 8, 2, "samples"),  # exactly two passes
    ],
)
def test_what_sizes_the_run(values, world, total, epochs, by) -> None:
    cfg = TrainSettings(batch_size=8, **values)
    budget = training_budget(cfg, 4, world)  # 4 micro-batches per pass and process
    assert (budget.total_steps, budget.epochs, budget.decided_by) == (total, epochs, by)
    assert budget.steps_per_epoch == math.ceil(4 / cfg.accum_steps)


def test_steps_and_samples_together_are_refused() -> None:
    with pytest.raises(InputError, match=r"steps \(10\) and samples \(500\) both size"):
        TrainSettings(steps=10, samples=500)
    with pytest.raises(InputError, match="at least 1"):
        TrainSettings(steps=0)


def test_epochs_given_beside_a_budget_in_one_place_is_refused() -> None:
    check_budget_keywords({"epochs": 3})
    check_budget_keywords({"steps": 3, "epochs": None})
    with pytest.raises(InputError, match=r"epochs \(--epochs\) and steps \(--steps\) both"):
        check_budget_keywords({"epochs": 3, "steps": 30}, "the options")
    with pytest.raises(InputError, match="epochs"):
        train("nothing.gpkg", model=TINY, epochs=2, samples=100)
    with pytest.raises(InputError, match="epochs"):
        train_stage("nothing.gpkg", model=TINY, epochs=2, steps=100)


def test_a_profile_epochs_give_way_to_steps_in_run_toml() -> None:
    assert PROFILES["offline-demo"]["train"]["epochs"] == 40
    config = resolve_config({"train": {"steps": 500}})
    cfg = TrainSettings.from_mapping(config["train"])
    assert cfg.steps == 500 and training_budget(cfg, 10).decided_by == "steps"


def test_the_schedule_spans_the_budget() -> None:
    cfg = TrainSettings(steps=200)  # warm-up: 5 % of the budget's steps
    schedule = lr_schedule(cfg, 200)
    assert (schedule.warmup, schedule.total) == (10, 200)
    for step in (0, 9, 10, 105, 199, 200):
        assert schedule(step) == pytest.approx(warmup_cosine(step, warmup=10, total=200))
    assert schedule(200) == pytest.approx(0.0)
    assert lr_schedule(TrainSettings(warmup_steps=50), 20).warmup == 20  # never past the end


def test_a_run_of_steps_ends_part_way_through_a_pass(small_run: Path, tmp_path: Path) -> None:
    result = train(small_run, run_dir=tmp_path, batch_size=8, steps=4, **FAST)  # epochs: 10
    assert result.finished and result.step == result.total_steps == 4
    log = pd.read_csv(tmp_path / METRICS_CSV)
    steps, epochs = log[log["kind"] == "step"], log[log["kind"] == "epoch"]
    assert steps["step"].tolist() == [1, 2, 3, 4] and steps["epoch"].tolist() == [1, 1, 1, 2]
    assert epochs["step"].tolist() == [3, 4]  # the second pass ended after its first step
    assert not math.isnan(epochs["i2t_r1"].iloc[-1])  # and was validated
    assert steps["lr"].iloc[-1] == pytest.approx(0.0)  # the cosine reached its end
    assert result.model_path is not None and result.model_path.is_file()


def test_samples_and_steps_and_epochs_of_the_same_length_train_alike(
    small_run: Path, tmp_path: Path
) -> None:
    by_epochs = train(small_run, run_dir=tmp_path / "e", batch_size=8, epochs=2, **FAST)
    by_samples = train(small_run, run_dir=tmp_path / "s", batch_size=8, samples=41, **FAST)
    assert by_epochs.total_steps == by_samples.total_steps == 2 * PER_EPOCH  # ceil(41 / 8)
    assert _states_equal(by_epochs.model.state_dict(), by_samples.model.state_dict())
    a, b = pd.read_csv(tmp_path / "e" / METRICS_CSV), pd.read_csv(tmp_path / "s" / METRICS_CSV)
    pd.testing.assert_frame_equal(
        a[["kind", "step", "lr", "loss"]], b[["kind", "step", "lr", "loss"]]
    )


# ---- checkpoints by time or step count -----------------------------------------------------


class FakeClock:
    """The checkpoint clock, moved on by hand (minutes)."""

    def __init__(self) -> None:
        self.minutes = 0.0

    def __call__(self) -> float:
        return self.minutes * 60


def test_checkpoint_clock(monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(budget_module, "now", clock)
    timer = CheckpointClock(TrainSettings())  # 10 minutes, no step count
    clock.minutes = 9.9
    assert not timer.due(500)
    clock.minutes = 10
    assert timer.due(501)
    timer.saved()
    clock.minutes = 19
    assert not timer.due(502)
    both = CheckpointClock(TrainSettings(checkpoint_every=5, checkpoint_minutes=2))
    assert both.due(5) and not both.due(6)
    clock.minutes = 21
    assert both.due(7)  # whichever comes first
    never = CheckpointClock(TrainSettings(checkpoint_minutes=0))
    clock.minutes = 1e6
    assert not never.due(3)


def _record_saves(monkeypatch, clock: FakeClock, minutes_per_step: float) -> list:
    """Each optimizer step takes ``minutes_per_step`` on ``clock``; returns the list that the
    saves made ((step, final) pairs) go to."""
    monkeypatch.setattr(budget_module, "now", clock)
    step = trainer_module.Trainer._train_step
    save = trainer_module.save_training_state
    saves: list[tuple[int, bool]] = []

    def timed_step(self, *args, **kwargs):
        step(self, *args, **kwargs)
        clock.minutes += minutes_per_step

    def recorded_save(trainer, final):
        saves.append((trainer.step, final))
        save(trainer, final)

    monkeypatch.setattr(trainer_module.Trainer, "_train_step", timed_step)
    monkeypatch.setattr(trainer_module, "save_training_state", recorded_save)
    return saves


def test_checkpoints_by_time(small_run: Path, tmp_path: Path, monkeypatch) -> None:
    saves = _record_saves(monkeypatch, FakeClock(), minutes_per_step=3)
    settings = dict(FAST, batch_size=8, epochs=4)  # 12 steps of 3 minutes
    train(small_run, run_dir=tmp_path / "a", **settings)
    assert saves == [(4, False), (8, False), (12, True)]  # 12 and 24 minutes; the end
    saves.clear()
    train(small_run, run_dir=tmp_path / "b", checkpoint_every=5, **settings)
    assert saves == [(4, False), (5, False), (9, False), (10, False), (12, True)]
    saves.clear()
    train(small_run, run_dir=tmp_path / "c", checkpoint_minutes=0, **settings)
    assert saves == [(12, True)]  # once, with model.pt
    saves.clear()
    train(small_run, run_dir=tmp_path / "d", checkpoint_every=1, **settings)
    assert saves == [(s, False) for s in range(1, 12)] + [(12, True)]  # the last step once


def test_ctrl_c_keeps_the_last_step_without_a_periodic_checkpoint(
    small_run: Path, tmp_path: Path, monkeypatch
) -> None:
    saves = _record_saves(monkeypatch, FakeClock(), minutes_per_step=0.1)
    step = trainer_module.Trainer._train_step

    def ctrl_c_after_step_5(self, *args, **kwargs):
        step(self, *args, **kwargs)
        if self.step == 5:
            self.stop.requested = True  # what the SIGINT handler records

    monkeypatch.setattr(trainer_module.Trainer, "_train_step", ctrl_c_after_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(small_run, run_dir=tmp_path, batch_size=8, epochs=4, **FAST)
    assert saves == [(5, False)]
    state = load_train_state(tmp_path / C.CHECKPOINTS_DIR / "urbanln" / "last.pt")
    assert state["step"] == 5 and not state["finished"]


def test_resume_after_a_time_checkpoint_is_exact(
    small_run: Path, tmp_path: Path, monkeypatch
) -> None:
    settings = dict(FAST, batch_size=5, accum_steps=2, val_fraction=0.2, augment=True, steps=7)
    whole = train(small_run, run_dir=tmp_path / "a", **settings)
    assert whole.finished and whole.step == 7

    clock = FakeClock()
    saves = _record_saves(monkeypatch, clock, minutes_per_step=4)
    timed_step = trainer_module.Trainer._train_step

    def crash_at_step_4(self, *args, **kwargs):
        if self.step == 4:
            raise RuntimeError("the machine went away")
        timed_step(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.Trainer, "_train_step", crash_at_step_4)
    with pytest.raises(RuntimeError, match="went away"):
        train(small_run, run_dir=tmp_path / "b", **settings)
    assert saves == [(3, False)]  # 12 minutes: mid-epoch, the only checkpoint before the crash
    monkeypatch.undo()
    rest = train(small_run, run_dir=tmp_path / "b", resume=True, **settings)
    assert rest.finished and rest.step == 7

    assert _states_equal(whole.model.state_dict(), rest.model.state_dict())
    assert _states_equal(whole.teacher.state_dict(), rest.teacher.state_dict())
    assert torch.equal(whole.img_queue.features, rest.img_queue.features)
    a = pd.read_csv(tmp_path / "a" / METRICS_CSV)
    b = pd.read_csv(tmp_path / "b" / METRICS_CSV)
    cols = ["kind", "epoch", "step", "lr", "loss", "i2t_r1"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


def test_checkpoint_spacing_may_change_on_resume(small_run: Path, tmp_path: Path) -> None:
    settings = dict(FAST, batch_size=8, epochs=2)
    train(small_run, run_dir=tmp_path, stop_after=2, **settings)
    result = train(
        small_run, run_dir=tmp_path, resume=True, checkpoint_minutes=1, checkpoint_every=1,
        **settings,
    )  # fmt: skip
    assert result.finished and result.step == 2 * PER_EPOCH


# ---- --stop-after and its old name ---------------------------------------------------------


def test_max_steps_still_stops_early_with_a_deprecation_warning(
    small_run: Path, tmp_path: Path
) -> None:
    settings = dict(FAST, batch_size=8, epochs=2)
    with pytest.warns(UrbangeoWarning, match=r"max_steps \(--max-steps\).*stop_after"):
        part = train(small_run, run_dir=tmp_path, max_steps=2, **settings)
    assert not part.finished and part.step == 2 and part.total_steps == 2 * PER_EPOCH
    with pytest.warns(UrbangeoWarning, match="stop_after"):
        more = train(small_run, run_dir=tmp_path, resume=True, max_steps=4, **settings)
    assert not more.finished and more.step == 4
    rest = train(small_run, run_dir=tmp_path, resume=True, stop_after=100, **settings)
    assert rest.finished and rest.step == 2 * PER_EPOCH
    with pytest.raises(InputError, match="old name of stop_after"):
        train(small_run, run_dir=tmp_path, stop_after=3, max_steps=3, **settings)


def test_train_stage_takes_the_old_name_too(monkeypatch) -> None:
    from urbangeo.model import stages

    seen: dict = {}
    monkeypatch.setattr(stages, "_train", lambda gpkg, s, **io: seen.update(io))
    with pytest.warns(UrbangeoWarning, match="stop_after"):
        stages.train_stage("run.gpkg", model=TINY, max_steps=4)
    assert seen["stop_after"] == 4 and "max_steps" not in seen
    with pytest.raises(InputError, match="old name of stop_after"):
        stages.train_stage("run.gpkg", model=TINY, stop_after=3, max_steps=3)


def _cli(monkeypatch, args: list[str]):
    from urbangeo.model import stages

    seen: dict = {}
    monkeypatch.setattr(stages, "train_stage", lambda *a, **k: seen.update(args=a, io=k))
    result = CliRunner().invoke(cli_model.train, ["--gpkg", "run.gpkg", *args])
    return result, seen


def test_the_train_command(monkeypatch) -> None:
    result, seen = _cli(monkeypatch, ["--stop-after", "5", "--samples", "1000"])
    assert result.exit_code == 0, result.output
    assert seen["io"] == {"pairs": None, "resume": False, "overwrite": False, "stop_after": 5}
    assert seen["args"][1].samples == 1000
    result, seen = _cli(monkeypatch, ["--max-steps", "5"])  # train_stage warns
    assert result.exit_code == 0 and seen["io"]["max_steps"] == 5 and "stop_after" not in seen["io"]
    # a profile's epochs give way to --steps; --epochs given beside it does not
    result, seen = _cli(monkeypatch, ["--profile", "offline-demo", "--steps", "50"])
    assert result.exit_code == 0, result.output
    assert (seen["args"][1].steps, seen["args"][1].epochs) == (50, 40)
    result, seen = _cli(monkeypatch, ["--epochs", "5", "--steps", "50"])
    assert result.exit_code == 1 and not seen
    assert "epochs (--epochs) and steps (--steps) both size the training" in result.output
    result, seen = _cli(monkeypatch, ["--steps", "5", "--samples", "50"])
    assert result.exit_code == 1 and "both size the training" in result.output


def test_the_old_flag_through_the_command(tmp_path: Path) -> None:
    gpkg = make_run(tmp_path / "run", n=12)
    args = ["--gpkg", str(gpkg), "--model", TINY, "--batch-size", "8", "--epochs", "2"]
    args += ["--queue-size", "16", "--max-steps", "2"]
    result = CliRunner().invoke(cli_model.train, args)
    assert result.exit_code == 0, result.output
    assert "--max-steps" in result.output and "--stop-after" in result.output
    state = load_train_state(gpkg.parent / C.CHECKPOINTS_DIR / "urbanln" / "last.pt")
    assert state["step"] == 2 and not state["finished"]
