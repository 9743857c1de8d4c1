"""The batch size of ``batch_size = "auto"``: the largest that fits in memory.

:func:`choose_batch_size` measures the peak memory of one real training step (forward,
backward and optimizer step of the run's own model, loss and precision) at two small batch
sizes, fits ``memory = fixed + per_pair x batch`` through them, takes the largest size whose
extrapolated peak stays within the budget, and runs one step at that size to check it (halving
it on out-of-memory or on a peak over the budget). Sizes are multiples of 8 (powers of two below
8), at least 2 (the contrastive loss needs negatives), at most :data:`MAX_AUTO_BATCH` and at
most a :data:`MIN_BATCHES_PER_EPOCH`-th of each process's training pairs.

The budget (:func:`memory_budget`) is :data:`HEADROOM` of what is free: on CUDA the GPU's free
memory plus what this process's allocator already holds (``torch.cuda.mem_get_info``), the
peak read by ``torch.cuda.max_memory_allocated``; on a CPU the memory available to the process
(``MemAvailable`` of ``/proc/meminfo``, and the cgroup's limit less its usage where one is
set), shared among the processes of a torchrun job on this machine, the peak read as the growth
of the resident set (``VmHWM`` reset through ``/proc/self/clear_refs``). Where the CPU's memory
cannot be read (not Linux), auto falls back to :data:`FALLBACK_BATCH`.

The trainer (:meth:`~urbangeo.model.training.trainer.Trainer`) probes before it builds its
optimizer and puts the model, teacher, queues and every random generator back as they were, so
a run with ``auto`` trains exactly as one given the chosen size. Under torchrun each process
probes its own device and all take the smallest size chosen. A resumed run takes the size its
checkpoint records and never probes again (another size would change the schedule).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from urbangeo.errors import InputError
from urbangeo.model.training.checkpoint import recorded_batch_size, rng_state, set_rng_state
from urbangeo.model.training.contrastive import ContrastiveModule
from urbangeo.model.training.optim import fused_ok, param_groups
from urbangeo.progress import message
from urbangeo.settings.model import AUTO_BATCH

if TYPE_CHECKING:
    from urbangeo.model.training.trainer import Trainer

#: Share of the free memory an automatic batch may fill: the rest absorbs the allocator's
#: fragmentation, the validation pass and what other processes allocate meanwhile.
HEADROOM = 0.85
#: The smallest automatic batch: the contrastive loss needs at least one negative per pair.
MIN_AUTO_BATCH = 2
#: The largest automatic batch per process. CLIP's contrastive loss gains from more negatives,
#: but by a thousand the gain is small (UrbanLN's queues add 4,096 more), a city's few thousand
#: pairs would make a handful of steps per pass, and the learning rate, tuned at 16 to 64,
#: would need retuning; memory is better spent on a larger model.
MAX_AUTO_BATCH = 1024
#: An automatic batch leaves at least this many batches in each process's pass over the
#: pairs, so that warm-up, cosine decay and per-epoch validation have steps to work with.
MIN_BATCHES_PER_EPOCH = 8
#: The two batch sizes of the memory probe.
PROBE_SIZES = (4, 16)
#: ``auto`` where memory cannot be measured (a CPU without /proc).
FALLBACK_BATCH = 64

#: Peak bytes of one training step at batch size n (raises an out-of-memory error).
Meter = Callable[[int], float]

_PROC = Path("/proc")
_CGROUP = Path("/sys/fs/cgroup")
#: A cgroup limit at least this large means "no limit" (cgroup v1 writes 2**63 rounded down).
_NO_LIMIT = 2**60


@dataclass(frozen=True)
class BatchChoice:
    """The size ``auto`` chose and why."""

    size: int
    #: What stopped it growing: memory, pairs (the pass over the pairs), maximum
    #: (:data:`MAX_AUTO_BATCH`), another process (torchrun) or fallback (memory not measurable).
    limited_by: str
    #: The memory budget in bytes (None: not measured).
    budget: float | None = None
    #: The fit ``fixed + per_pair x n`` in bytes (None: the cap was checked directly).
    fixed: float | None = None
    per_pair: float | None = None
    #: Times the size was halved after its check step ran out of memory or over the budget.
    halvings: int = 0

    def describe(self) -> str:
        """One line for the progress message."""
        why = {
            "memory": "the most that fits in memory",
            "pairs": f"at least {MIN_BATCHES_PER_EPOCH} batches per pass over the pairs",
            "maximum": f"the maximum of auto, {MAX_AUTO_BATCH}",
            "another process": "the smallest any process of the job could take",
            "fallback": "memory cannot be measured here; the usual size",
        }[self.limited_by]
        text = f"Batch size auto: {self.size} pairs per batch and process ({why}"
        if self.budget is not None:
            text += f"; budget {_bytes(self.budget)}"
            if self.fixed is not None and self.per_pair is not None:
                text += f", measured {_bytes(self.fixed)} + {_bytes(self.per_pair)} per pair"
        if self.halvings:
            text += f"; halved {self.halvings}x: the extrapolated size did not fit"
        return text + ")."


def _bytes(n: float) -> str:
    n = max(0.0, float(n))
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GB"  # not reached


def round_batch(n: int) -> int:
    """``n`` rounded down to a multiple of 8, or below 8 to a power of two (0 below 1)."""
    n = int(n)
    if n >= 8:
        return n - n % 8
    return 0 if n < 1 else 1 << (n.bit_length() - 1)


def largest_fitting(fixed: float, per_pair: float, budget: float) -> int:
    """The largest ``n`` with ``fixed + per_pair * n <= budget`` (0 if none, a huge number
    when each pair costs nothing)."""
    if per_pair <= 0:
        return 2**31 if fixed <= budget else 0
    return max(0, math.floor((budget - fixed) / per_pair))


def pairs_cap(n_train: int, world_size: int = 1) -> tuple[int, str]:
    """The largest automatic batch for ``n_train`` training pairs, and what sets it."""
    per_process = math.ceil(max(0, n_train) / max(1, world_size))
    cap = round_batch(max(MIN_AUTO_BATCH, per_process // MIN_BATCHES_PER_EPOCH))
    if cap >= MAX_AUTO_BATCH:
        return MAX_AUTO_BATCH, "maximum"
    return cap, "pairs"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation that failed (CUDA or CPU)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def choose_batch_size(
    meter: Meter,
    budget: float | Callable[[], float],
    cap: int,
    *,
    cap_reason: str = "pairs",
    probe: tuple[int, int] = PROBE_SIZES,
) -> BatchChoice:
    """The largest batch (see :func:`round_batch`) up to ``cap`` whose step peaks within
    ``budget`` bytes, by the measurements of ``meter``.

    The first step (the smaller probe size) is a warm-up, not measured: it allocates what every
    step keeps (optimizer state, workspaces). ``budget`` may be a function, read after it.
    When ``cap`` is no larger than the larger probe size the cap itself is checked.
    """
    cap = max(MIN_AUTO_BATCH, int(cap))
    small, large = (max(MIN_AUTO_BATCH, min(int(p), cap)) for p in probe)
    peaks: dict[int, float | None] = {}  # None: out of memory

    def measure(n: int, *, keep: bool = True) -> float | None:
        if n in peaks:
            return peaks[n]
        try:
            peak: float | None = float(meter(n))
        except Exception as exc:  # only an allocation that failed is an answer
            if not is_out_of_memory(exc):
                raise
            peak = None
        if keep or peak is None:
            peaks[n] = peak
        return peak

    measure(small, keep=False)
    limit = float(budget() if callable(budget) else budget)
    fixed = per_pair = None
    if cap <= large or peaks.get(small, 0.0) is None:
        candidate, reason = cap, cap_reason
    else:
        low, high = measure(small), measure(large)
        if low is None or high is None:
            candidate, reason = small, "memory"
        else:
            per_pair = (high - low) / (large - small)
            fixed = low - per_pair * small
            if per_pair <= 0:  # growth too small to see: count it all per pair (the safe side)
                fixed, per_pair = 0.0, max(low / small, high / large, 1.0)
            fitting = round_batch(largest_fitting(fixed, per_pair, limit))
            candidate, reason = (
                (max(fitting, MIN_AUTO_BATCH), "memory") if fitting < cap else (cap, cap_reason)
            )

    bad = [n for n, peak in peaks.items() if peak is None or peak > limit]
    while bad and candidate >= min(bad):  # known not to fit: no need to try
        candidate, reason = round_batch(min(bad) // 2), "memory"
        bad = [n for n in bad if n > candidate]
    halvings = 0
    while True:
        if candidate < MIN_AUTO_BATCH:
            raise InputError(
                f"Even a batch of {MIN_AUTO_BATCH} pairs does not fit in the memory left for "
                f"training ({_bytes(limit)}).",
                hint="Free memory (close other programs or GPU jobs), train a smaller model, "
                "train part of it (--train last-n), or set --batch-size and --precision "
                "yourself.",
            )
        peak = measure(candidate)
        if peak is not None and peak <= limit:
            break
        candidate, reason = round_batch(candidate // 2), "memory"
        halvings += 1
    return BatchChoice(candidate, reason, limit, fixed, per_pair, halvings)


# ---- the memory budget


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _field(text: str | None, name: str) -> int | None:
    """The number after ``name`` in /proc-style ``name: value`` or ``name value`` lines."""
    for line in (text or "").splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[0] == name:
            try:
                return int(parts[1])
            except ValueError:
                return None
    return None


def _number(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None  # "max" (no limit), unreadable


def cgroup_available(cgroup: Path = _CGROUP) -> int | None:
    """Bytes this process's cgroup may still use (limit less usage, reclaimable page cache
    counted as free), or None without a limit. cgroup v2, else v1."""
    for limit_file, usage_file, stat_file, inactive in (
        ("memory.max", "memory.current", "memory.stat", "inactive_file"),
        (
            "memory/memory.limit_in_bytes",
            "memory/memory.usage_in_bytes",
            "memory/memory.stat",
            "total_inactive_file",
        ),
    ):
        limit = _number(_read(cgroup / limit_file))
        if limit is None or limit >= _NO_LIMIT:
            continue
        usage = _number(_read(cgroup / usage_file)) or 0
        cache = _field(_read(cgroup / stat_file), inactive) or 0
        return max(0, limit - usage + cache)
    return None


def cpu_available(proc: Path = _PROC, cgroup: Path = _CGROUP) -> int | None:
    """Bytes of RAM this process may still use: ``MemAvailable``, or less under a cgroup
    limit; None where /proc/meminfo cannot be read."""
    kb = _field(_read(proc / "meminfo"), "MemAvailable")
    if kb is None:
        return None
    available = kb * 1024
    limited = cgroup_available(cgroup)
    return available if limited is None else min(available, limited)


def memory_budget(
    device: torch.device,
    *,
    processes: int = 1,
    headroom: float = HEADROOM,
    proc: Path = _PROC,
    cgroup: Path = _CGROUP,
) -> float | None:
    """The bytes a training step may peak at: ``headroom`` of the GPU's free memory plus what
    this process already holds there (CUDA: peaks are absolute), or of the RAM available,
    shared among ``processes`` on this machine (CPU: peaks are growth); None if unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return headroom * (free + torch.cuda.memory_reserved(device))
    available = cpu_available(proc, cgroup)
    if available is None:
        return None
    return headroom * available / max(1, processes)


# ---- measuring one step


def cuda_peak(step: Callable[[], None], device: torch.device) -> float:
    """The peak bytes CUDA allocated while ``step`` ran (what is already allocated included)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return float(torch.cuda.max_memory_allocated(device))


def _status_kb(name: str, proc: Path = _PROC) -> int | None:
    return _field(_read(proc / "self" / "status"), name)


def _reset_resident_peak(proc: Path = _PROC) -> bool:
    """Reset ``VmHWM`` to the current resident set (Linux 4.0+)."""
    try:
        (proc / "self" / "clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _release_free_memory() -> None:
    """Collect garbage and return free heap pages to the system, so that the resident set
    before a step holds what is live, not what the last step freed."""
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc
        pass


def cpu_measurable(proc: Path = _PROC) -> bool:
    """Whether :func:`cpu_peak` can measure here (Linux's /proc)."""
    return _status_kb("VmRSS", proc) is not None and _reset_resident_peak(proc)


def cpu_peak(step: Callable[[], None], proc: Path = _PROC) -> float:
    """How far the resident set grew at its peak while ``step`` ran, in bytes."""
    _release_free_memory()
    before = _status_kb("VmRSS", proc)
    if before is None or not _reset_resident_peak(proc):
        raise OSError("The resident set size cannot be read here (no /proc).")
    step()
    peak = _status_kb("VmHWM", proc) or before
    return float(max(0, peak - before) * 1024)


# ---- the trainer's probe


def _clone_state(module: nn.Module | None) -> dict[str, Any] | None:
    if module is None:
        return None
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _probe_image(trainer: Trainer) -> torch.Tensor:
    """One decodable training image, as the training transform gives it."""
    for index in range(len(trainer.train_set)):
        image, _ = trainer.train_set[index]
        if image is not None:
            return image
    raise InputError(
        "None of the training images could be decoded.",
        hint="Check the images of the run (urbangeo status) or set --batch-size yourself.",
    )


@contextmanager
def step_probe(trainer: Trainer) -> Iterator[Meter]:
    """A meter that runs real training steps of ``trainer``'s model (its loss, precision,
    freezing, teacher and full queues) on copies of one training image; afterwards the model,
    teacher, queues and random generators are as they were."""
    from open_clip import ClipLoss

    cfg, device, model = trainer.cfg, trainer.device, trainer.model
    teacher, queues = trainer.teacher, (trainer.img_queue, trainer.txt_queue)
    saved: dict[str, Any] = {
        "model": _clone_state(model),
        "teacher": _clone_state(teacher.module if teacher is not None else None),
        "queues": [_clone_state(q) for q in queues],
        "rng": rng_state(),
        "training": model.training,
    }
    image = _probe_image(trainer).to(device)
    tokens = trainer.pairs.train_tokens
    module = ContrastiveModule(model)  # never the DDP wrapper: no collective while probing
    clip_loss = ClipLoss() if trainer.clip_loss is not None else None
    optimizer: torch.optim.Optimizer | None = torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, fused=fused_ok(device)
    )
    # fp16: a scale of 1 rarely overflows, so the warm-up step does allocate AdamW's state
    scaler = torch.amp.GradScaler(
        "cuda", init_scale=1.0, enabled=trainer.amp_dtype == torch.float16
    )
    for queue in queues:  # a full queue: the loss's largest matrices
        if queue is not None:
            queue.filled.fill_(queue.size)
    module.train()

    def step(n: int) -> None:
        assert optimizer is not None
        images = image.expand(n, *image.shape).contiguous()
        toks = tokens[torch.arange(n) % len(tokens)].to(device, torch.long)
        optimizer.zero_grad(set_to_none=True)
        if teacher is not None:
            teacher.update(model, trainable_only=True)
        loss, _, _ = trainer._forward_loss(images, toks, module=module, clip_loss=clip_loss)
        scaler.scale(loss / cfg.accum_steps).backward()
        if cfg.grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(trainer.trainable, cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()

    def meter(n: int) -> float:
        try:
            if device.type == "cuda":
                return cuda_peak(lambda: step(n), device)
            return cpu_peak(lambda: step(n))
        finally:
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()

    try:
        yield meter
    finally:
        optimizer = None
        model.load_state_dict(saved["model"])
        if teacher is not None:
            teacher.module.load_state_dict(saved["teacher"])
        for queue, state in zip(queues, saved["queues"], strict=True):
            if queue is not None:
                queue.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        model.train(saved["training"])
        set_rng_state(saved["rng"])
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _local_processes() -> int:
    """Processes of this torchrun job on this machine (they share its RAM)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def auto_batch_size(
    trainer: Trainer,
    *,
    meter: Meter | None = None,
    budget: float | Callable[[], float] | None = None,
) -> BatchChoice:
    """The batch size ``auto`` takes for ``trainer`` (each process of a torchrun job probes
    its own device; all take the smallest). ``meter`` and ``budget`` replace the real probe
    and the measured budget (tests)."""
    info, device = trainer.info, trainer.device
    cap, cap_reason = pairs_cap(len(trainer.pairs.train), info.world_size)
    choice: BatchChoice | None = None
    failure: InputError | None = None
    try:
        if meter is not None:
            assert budget is not None, "a meter comes with its budget"
            choice = choose_batch_size(meter, budget, cap, cap_reason=cap_reason)
        elif device.type != "cuda" and not cpu_measurable():
            choice = BatchChoice(min(round_batch(FALLBACK_BATCH), cap), "fallback")
        else:
            processes = _local_processes() if device.type != "cuda" else 1

            def measured() -> float:
                found = memory_budget(device, processes=processes)
                return float("inf") if found is None else found

            with step_probe(trainer) as probe:
                choice = choose_batch_size(
                    probe, measured if budget is None else budget, cap, cap_reason=cap_reason
                )
    except InputError as exc:
        failure = exc
    if info.enabled:  # every process takes the smallest size (0: one of them failed)
        size = torch.tensor([choice.size if choice is not None else 0], device=device)
        dist.all_reduce(size, op=dist.ReduceOp.MIN)
        smallest = int(size.item())
        if smallest == 0 and failure is None:
            failure = InputError(
                "Another process of the job could not fit a batch of "
                f"{MIN_AUTO_BATCH} pairs in memory.",
                hint="See that process's error, or set --batch-size yourself.",
            )
        if choice is not None and smallest < choice.size:
            choice = replace(choice, size=smallest, limited_by="another process")
    if failure is not None:
        raise failure
    assert choice is not None
    return choice


def batch_size_for(trainer: Trainer, state: dict[str, Any] | None) -> int:
    """The trainer's ``batch_size``, or for ``auto`` the size a resumed checkpoint records
    (another would change the schedule), else the largest that fits in memory."""
    cfg, main = trainer.cfg, trainer.info.is_main
    if cfg.batch_size != AUTO_BATCH:
        return int(cfg.batch_size)
    if state is not None:
        size = recorded_batch_size(state)
        if size is None:
            raise InputError(
                f"Cannot resume {trainer.last_path} with --batch-size auto: it does not record "
                "the batch size it was trained with.",
                hint="Resume with the run's --batch-size, or start over with --overwrite.",
            )
        if main:
            message(f"Batch size {size} (auto), as recorded in {trainer.last_path}.")
        return size
    choice = auto_batch_size(trainer)
    if main:
        message(choice.describe())
    return choice.size
