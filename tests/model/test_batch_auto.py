"""``batch_size = "auto"`` (issue #16): the largest batch that fits in memory, found by
measuring real training steps at two sizes, extrapolated linearly, checked once (halved on
out-of-memory), recorded so that a resumed run keeps it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tests.model.helpers import FAST_TRAIN as FAST
from tests.model.synthetic import make_run
from urbangeo.errors import InputError
from urbangeo.io.runs import read_stage_records, stage_fingerprint
from urbangeo.model.stages import train_stage
from urbangeo.model.training import batch as batch_module
from urbangeo.model.training import load_train_state, train
from urbangeo.model.training.batch import (
    MAX_AUTO_BATCH,
    BatchChoice,
    auto_batch_size,
    choose_batch_size,
    cpu_available,
    cuda_peak,
    memory_budget,
    pairs_cap,
    round_batch,
    step_probe,
)
from urbangeo.model.training.distributed import DistInfo
from urbangeo.model.training.trainer import Trainer
from urbangeo.pipeline import resolve_config
from urbangeo.settings import PROFILES, TrainSettings
from urbangeo_cli import model as cli_model

MB = 2**20

pytestmark = pytest.mark.usefixtures("one_thread", "quiet_progress")


def _linear(fixed: float, per_pair: float, calls: list[int] | None = None):
    def meter(n: int) -> float:
        if calls is not None:
            calls.append(n)
        return fixed + per_pair * n

    return meter


def _largest_by_search(fixed: float, per_pair: float, budget: float, cap: int) -> int:
    """The answer by brute force: the largest allowed size (2, 4, then multiples of 8) up to
    ``cap`` whose peak fits."""
    allowed = [2, 4, *range(8, cap + 1, 8)]
    return max(n for n in allowed if n <= cap and fixed + per_pair * n <= budget)


# ---- the choice, with a fake memory meter --------------------------------------------------


@pytest.mark.parametrize(
    ("fixed", "per_pair", "budget", "cap"),
    [
        (1_000 * MB, 20 * MB, 8_000 * MB, 1024),  # memory decides: 350 -> 344
        (300 * MB, 3 * MB, 1_000 * MB, 1024),  # 233 -> 232
        (50 * MB, 0.5 * MB, 64_000 * MB, 1024),  # the maximum decides
        (50 * MB, 0.5 * MB, 64_000 * MB, 96),  # the pairs decide
        (100 * MB, 30 * MB, 400 * MB, 1024),  # 10 -> 8
        (100 * MB, 30 * MB, 250 * MB, 1024),  # 5 -> 4, below the probe sizes
    ],
)
def test_the_linear_fit_gives_the_analytic_size(fixed, per_pair, budget, cap) -> None:
    calls: list[int] = []
    choice = choose_batch_size(_linear(fixed, per_pair, calls), budget, cap, cap_reason="pairs")
    assert choice.size == _largest_by_search(fixed, per_pair, budget, cap)
    if choice.fixed is not None and choice.per_pair is not None:
        assert choice.fixed == pytest.approx(fixed) and choice.per_pair == pytest.approx(per_pair)
    assert choice.limited_by == ("memory" if choice.size < cap else "pairs")
    assert choice.halvings == 0
    assert calls[:3] == [4, 4, 16]  # a warm-up step, then the two probe sizes
    assert len(calls) <= 4  # and one check at the chosen size


def test_a_cap_within_the_probe_sizes_is_checked_directly() -> None:
    calls: list[int] = []
    choice = choose_batch_size(_linear(10 * MB, MB, calls), 1e12, 8, cap_reason="pairs")
    assert (choice.size, choice.limited_by, choice.per_pair) == (8, "pairs", None)
    assert calls == [4, 8]


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        MemoryError(),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB"),
    ],
)
def test_out_of_memory_at_the_chosen_size_halves_it(error) -> None:
    calls: list[int] = []

    def meter(n: int) -> float:  # linear, but nothing from 300 pairs on fits
        calls.append(n)
        if n >= 300:
            raise error
        return 1_000 * MB + 10 * MB * n

    choice = choose_batch_size(meter, 6_200 * MB, MAX_AUTO_BATCH)
    assert _largest_by_search(1_000 * MB, 10 * MB, 6_200 * MB, MAX_AUTO_BATCH) == 520
    assert calls[-2:] == [520, 256]  # 520 // 2 = 260, rounded down to a multiple of 8
    assert (choice.size, choice.halvings, choice.limited_by) == (256, 1, "memory")


def test_a_peak_over_the_budget_halves_too() -> None:
    # memory grows faster than linearly: the extrapolation overshoots, the check sees it
    choice = choose_batch_size(lambda n: 10 * MB * n + 0.2 * MB * n * n, 1_000 * MB, 1024)
    assert choice.size < 100 and choice.halvings >= 1
    assert 10 * MB * choice.size + 0.2 * MB * choice.size**2 <= 1_000 * MB


def test_other_errors_are_not_taken_for_a_lack_of_memory() -> None:
    def meter(n: int) -> float:
        raise ValueError("a bug in the model")

    with pytest.raises(ValueError, match="a bug"):
        choose_batch_size(meter, 1e12, 1024)


def test_nothing_fits() -> None:
    with pytest.raises(InputError, match="Even a batch of 2") as err:
        choose_batch_size(_linear(900 * MB, 100 * MB), 1_000 * MB, 1024)
    assert "--batch-size" in err.value.hint


def test_sizes_and_caps() -> None:
    assert [round_batch(n) for n in (1, 2, 3, 5, 7, 8, 15, 17, 1023)] == [
        1, 2, 2, 4, 4, 8, 8, 16, 1016,
    ]  # fmt: skip
    assert pairs_cap(22) == (2, "pairs")  # at least 2, even below 8 batches per pass
    assert pairs_cap(553) == (64, "pairs")  # 553 // 8 = 69
    assert pairs_cap(553, world_size=4) == (16, "pairs")  # 139 per process // 8 = 17
    assert pairs_cap(10**6) == (MAX_AUTO_BATCH, "maximum")


# ---- the budget: CUDA and the CPU (with fake devices and files) ---------------------------


def test_the_cuda_budget_and_peak(monkeypatch) -> None:
    """The CUDA branch, without a GPU: the free memory plus what the allocator holds, and the
    peak counter reset before the step and read after it."""
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (6_000 * MB, 80_000 * MB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 2_000 * MB)
    assert memory_budget(cuda) == pytest.approx(0.85 * 8_000 * MB)

    events: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    monkeypatch.setattr(
        torch.cuda, "reset_peak_memory_stats", lambda device=None: events.append("reset")
    )
    monkeypatch.setattr(
        torch.cuda, "max_memory_allocated", lambda device=None: events.append("read") or 123
    )
    assert cuda_peak(lambda: events.append("step"), cuda) == 123
    assert events == ["sync", "reset", "step", "sync", "read"]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_cpu_budget_reads_meminfo_and_the_cgroup_limit(tmp_path: Path) -> None:
    proc, v2, v1, none = (tmp_path / name for name in ("proc", "v2", "v1", "none"))
    _write(proc / "meminfo", "MemTotal:  16000000 kB\nMemAvailable:    8000000 kB\n")
    assert cpu_available(proc, none) == 8_000_000 * 1024

    _write(v2 / "memory.max", f"{4_000 * MB}\n")
    _write(v2 / "memory.current", f"{1_000 * MB}\n")
    _write(v2 / "memory.stat", f"anon 1\ninactive_file {500 * MB}\n")
    assert cpu_available(proc, v2) == 3_500 * MB  # the limit less what is used, cache free
    cpu = torch.device("cpu")
    budget = memory_budget(cpu, processes=2, proc=proc, cgroup=v2)
    assert budget == pytest.approx(0.85 * 3_500 * MB / 2)  # two processes share it

    _write(v2 / "memory.max", "max\n")
    assert cpu_available(proc, v2) == 8_000_000 * 1024  # no limit
    _write(v1 / "memory" / "memory.limit_in_bytes", f"{2_000 * MB}\n")
    _write(v1 / "memory" / "memory.usage_in_bytes", f"{500 * MB}\n")
    _write(v1 / "memory" / "memory.stat", f"total_inactive_file {100 * MB}\n")
    assert cpu_available(proc, v1) == 1_600 * MB
    assert memory_budget(cpu, proc=none, cgroup=none) is None  # no /proc: unknown


# ---- the real probe on the tiny model ------------------------------------------------------


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_real_probe_on_the_cpu_fits_and_trains(
    small_run: Path, tmp_path: Path, monkeypatch
) -> None:
    cfg = TrainSettings(batch_size=8, epochs=1, **FAST)
    trainer = Trainer(cfg, small_run, tmp_path, DistInfo(), resume=False, overwrite=True)
    before, rng = _state(trainer.model), torch.get_rng_state()
    teacher = _state(trainer.teacher.module)
    queue = _state(trainer.img_queue)
    with step_probe(trainer) as probe:
        probe(4)  # warm-up
        peaks = [probe(n) for n in (4, 16)]
    assert 0 < peaks[0] < peaks[1]  # a larger batch needs more memory

    # memory-bound: the fixed part and about 40 pairs' worth on the measured slope, below a
    # cap of 64 (the real probe, its fit and its check; sizes measured again, so not exact)
    slope = (peaks[1] - peaks[0]) / 12
    with step_probe(trainer) as probe:
        choice = choose_batch_size(probe, peaks[0] + 36 * slope, 64)
        torch.rand(3)  # as dropout in a larger model would: the random state is put back
    assert choice.limited_by == "memory" and 16 <= choice.size < 64
    assert choice.per_pair is not None and choice.per_pair > 0
    # the probes left nothing behind: weights, teacher, queue, random state, gradients
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(v, trainer.teacher.module.state_dict()[k]) for k, v in teacher.items())
    assert all(torch.equal(v, trainer.img_queue.state_dict()[k]) for k, v in queue.items())
    assert torch.equal(rng, torch.get_rng_state())
    assert all(p.grad is None for p in trainer.model.parameters())

    result = train(small_run, run_dir=tmp_path / "one", batch_size=choice.size, steps=1, **FAST)
    assert result.finished and result.step == 1
    # the whole of auto on this run: 22 training pairs cap it at 2
    assert auto_batch_size(trainer).size == 2
    # where memory cannot be measured (no /proc): the usual size, within the cap
    monkeypatch.setattr(batch_module, "cpu_measurable", lambda: False)
    monkeypatch.setattr(batch_module, "pairs_cap", lambda n, world: (512, "pairs"))
    assert auto_batch_size(trainer) == BatchChoice(64, "fallback")


def test_auto_trains_exactly_as_its_chosen_size(
    small_run: Path, tmp_path: Path, monkeypatch
) -> None:
    """The probe runs real steps, then puts everything back: a run with auto is bit-identical
    to one given the size auto chose. The size is shown, recorded in the counts and last.pt."""
    shown: list[str] = []
    monkeypatch.setattr(batch_module, "message", lambda text, **k: shown.append(text))
    auto = train(small_run, run_dir=tmp_path / "auto", batch_size="auto", epochs=1, **FAST)
    size = auto.counts["batch_size"]
    assert size == 2  # 22 training pairs: at least 8 batches per pass
    assert any(text.startswith("Batch size auto: 2 pairs per batch") for text in shown), shown
    assert auto.config.batch_size == "auto"  # what the fingerprint and record settings see
    assert load_train_state(auto.checkpoint)["batch_size"] == size
    fixed = train(small_run, run_dir=tmp_path / "fixed", batch_size=size, epochs=1, **FAST)
    assert fixed.step == auto.step
    theirs = fixed.model.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in auto.model.state_dict().items())


def test_the_record_keeps_auto_in_its_settings_and_the_size_in_its_counts(
    tmp_path: Path,
) -> None:
    gpkg = make_run(tmp_path / "run", n=24)
    values = dict(FAST, batch_size="auto", epochs=1)
    train_stage(gpkg, **values)
    records = read_stage_records(gpkg)
    record = records["train"]
    assert record.params["batch_size"] == "auto" and record.counts["batch_size"] == 2
    inputs = {name: r.fingerprint for name, r in records.items() if name != "train"}
    auto = TrainSettings.from_mapping(values)
    assert record.fingerprint == stage_fingerprint("train", auto, inputs)
    assert record.fingerprint != stage_fingerprint("train", auto.replace(batch_size=2), inputs)


def test_a_resumed_run_keeps_the_recorded_size(
    small_run: Path, tmp_path: Path, monkeypatch
) -> None:
    settings = dict(FAST, batch_size="auto", epochs=2)
    monkeypatch.setattr(batch_module, "auto_batch_size", lambda t: BatchChoice(4, "memory"))
    first = train(small_run, run_dir=tmp_path, stop_after=2, **settings)
    assert not first.finished and first.counts["batch_size"] == 4

    def no_probe(trainer):
        raise AssertionError("a resumed run must not probe again")

    monkeypatch.setattr(batch_module, "auto_batch_size", no_probe)
    with pytest.raises(InputError, match="settings differ"):
        train(small_run, run_dir=tmp_path, resume=True, **{**settings, "batch_size": 8})
    resumed = train(small_run, run_dir=tmp_path, resume=True, **settings)
    assert resumed.finished and resumed.counts["batch_size"] == 4
    assert resumed.total_steps == first.total_steps
    assert load_train_state(resumed.checkpoint)["batch_size"] == 4
    # the chosen size given as a number resumes too: the same schedule
    monkeypatch.setattr(batch_module, "auto_batch_size", lambda t: BatchChoice(4, "memory"))
    again = train(small_run, run_dir=tmp_path / "b", stop_after=1, **settings)
    monkeypatch.setattr(batch_module, "auto_batch_size", no_probe)
    done = train(small_run, run_dir=tmp_path / "b", resume=True, **{**settings, "batch_size": 4})
    assert again.counts["batch_size"] == done.counts["batch_size"] == 4 and done.finished


DDP_WORKER = """
import os, sys
import torch
from urbangeo.model.training import batch, train
from urbangeo.progress import set_mode

set_mode("none")
torch.set_num_threads(1)
rank = int(os.environ["RANK"])
batch.pairs_cap = lambda n, world: (64, "pairs")  # room above the probe sizes
if rank == 1:  # less memory here: about 20 pairs' worth of growth
    batch.memory_budget = lambda device, **k: 30 * 2**20
result = train(sys.argv[1], run_dir=sys.argv[2], model="urbangeo-tiny-vit", epochs=1,
               batch_size="auto", queue_size=8, warmup_steps=1, overwrite=True)
torch.save({"batch_size": result.counts["batch_size"], "step": result.step},
           os.path.join(sys.argv[2], f"rank{rank}.pt"))
"""


def test_every_process_of_a_ddp_job_takes_the_smallest_size(tmp_path: Path) -> None:
    """torchrun, 2 gloo processes on CPU: each probes by itself (no collective while
    probing), then both train with the smaller of their sizes."""
    gpkg = make_run(tmp_path / "run", n=24)
    out = tmp_path / "out"
    worker = tmp_path / "worker.py"
    worker.write_text(DDP_WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2]), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", str(worker), str(gpkg), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (torch.load(out / f"rank{r}.pt") for r in (0, 1))
    assert rank0 == rank1
    assert 8 <= rank0["batch_size"] <= 24  # rank 1's budget, not rank 0's 64
    assert (
        load_train_state(out / "checkpoints" / "urbanln" / "last.pt")["batch_size"]
        == (rank0["batch_size"])
    )


# ---- the setting: defaults, command line, run.toml -----------------------------------------


def test_auto_is_the_default_but_the_demo_profile_keeps_16() -> None:
    assert TrainSettings().batch_size == "auto"
    assert PROFILES["offline-demo"]["train"]["batch_size"] == 16
    assert TrainSettings.from_mapping(PROFILES["offline-demo"]["train"]).batch_size == 16
    # the fingerprint sees the setting, never the size chosen
    assert TrainSettings().to_dict(runtime=False)["batch_size"] == "auto"


def test_run_toml_accepts_auto() -> None:
    values = tomllib.loads('[train]\nbatch_size = "auto"\n')
    assert TrainSettings.from_mapping(values["train"]).batch_size == "auto"
    config = resolve_config(values)
    assert config["train"]["batch_size"] == "auto"
    assert resolve_config({"train": {"batch_size": 32}})["train"]["batch_size"] == 32
    with pytest.raises(InputError, match="or 'auto'"):
        resolve_config({"train": {"batch_size": "many"}})


@pytest.fixture
def seen_train(monkeypatch) -> list:
    from urbangeo.model import stages

    seen: list = []
    monkeypatch.setattr(stages, "train_stage", lambda gpkg, settings, **k: seen.append(settings))
    return seen


def test_the_command_line_accepts_auto_and_numbers(seen_train: list) -> None:
    runner = CliRunner()
    for value, expected in (("auto", "auto"), ("AUTO", "auto"), ("12", 12)):
        result = runner.invoke(cli_model.train, ["--gpkg", "r.gpkg", "--batch-size", value])
        assert result.exit_code == 0, result.output
        assert seen_train[-1].batch_size == expected
    assert runner.invoke(cli_model.train, ["--gpkg", "r.gpkg"]).exit_code == 0
    assert seen_train[-1].batch_size == "auto"
    result = runner.invoke(cli_model.train, ["--help"])
    assert "N|auto" in result.output


@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "at least 1, not 0"), ("-3", "at least 1, not -3"), ("many", "or 'auto', not 'many'")],
)
def test_bad_batch_sizes_are_refused_before_any_work(seen_train: list, value, message) -> None:
    result = CliRunner().invoke(cli_model.train, ["--gpkg", "r.gpkg", "--batch-size", value])
    assert result.exit_code != 0
    assert "batch_size (--batch-size)" in result.output and message in result.output
    assert seen_train == []  # nothing started
