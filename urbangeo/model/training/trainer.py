"""UrbanLN pre-training: CLIP + IPSI + momentum self-distillation on image–caption pairs.

:func:`train` runs the whole loop: pairs from a run GeoPackage (or a pairs file), a
deterministic validation split, AdamW with linear warm-up and cosine decay, gradient
accumulation, mixed precision on CUDA (bf16 autocast, or fp16 with a GradScaler), parameter
freezing, the EMA teacher with its two feature queues, checkpoints that resume exactly, a
``train_metrics.csv`` and image↔text retrieval on the held-out pairs after every epoch. How
long it trains (epochs, steps or samples) and when it saves (minutes or steps) is
:mod:`~urbangeo.model.training.budget`'s.
Launched by ``torchrun`` it trains with DistributedDataParallel, one process per GPU (or CPU
process with gloo), the queues filled from all ranks. The modes and the freezing choices are
described in :mod:`urbangeo.model.training.config`.

Ctrl-C stops at the next micro-batch, validation batch or step, with a checkpoint where the
state is whole (:mod:`~urbangeo.model.training.stopping`); a loss or weights that become NaN
or infinite stop training with an :class:`~urbangeo.errors.InputError`, and such a state is
never saved: ``last.pt`` keeps the last good one.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from urbangeo import constants as C
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.model.clip import _check_architecture, create_model, with_image_normalization
from urbangeo.model.data import (
    ImageDataset,
    ResumableSampler,
    autocast,
    batches_per_epoch,
    collate_images,
    pick_device,
    resolve_precision,
)
from urbangeo.model.distill import (
    MAX_LOGIT_SCALE,
    EMATeacher,
    FeatureQueue,
    concat_all_gather,
    momentum_distillation_loss,
)
from urbangeo.model.protocols import ClipModel
from urbangeo.model.threads import use_threads
from urbangeo.model.training.batch import batch_size_for
from urbangeo.model.training.budget import (
    CheckpointClock,
    lr_schedule,
    run_settings,
    stop_after_keyword,
    training_budget,
)
from urbangeo.model.training.checkpoint import (
    non_finite,
    restore_training_state,
    resume_state,
    save_training_state,
    seed_everything,
    weight_tensors,
)
from urbangeo.model.training.config import LAST_CHECKPOINT, METRICS_CSV, MODEL_FILE
from urbangeo.model.training.contrastive import ContrastiveModule, embed_dim, encode_text
from urbangeo.model.training.distributed import (
    DistInfo,
    all_sizes,
    allreduce_grads,
    any_rank,
    init_distributed,
    mean_across,
)
from urbangeo.model.training.image_norm import choose_image_norm
from urbangeo.model.training.log import MetricsLog, step_progress
from urbangeo.model.training.metrics import encode_pairs, retrieval_metrics
from urbangeo.model.training.optim import apply_freezing, fused_ok, param_groups
from urbangeo.model.training.pairs import load_training_pairs
from urbangeo.model.training.stopping import (
    StopRequest,
    diverged_error,
    ignore_sigint,
    interrupted_message,
)
from urbangeo.progress import message
from urbangeo.settings.model import TrainSettings


@dataclass
class TrainResult:
    """What :func:`train` leaves behind."""

    model: nn.Module
    teacher: EMATeacher | None
    img_queue: FeatureQueue | None
    txt_queue: FeatureQueue | None
    config: TrainSettings
    step: int
    total_steps: int
    finished: bool
    checkpoint: Path | None  # full training state (last.pt)
    model_path: Path | None  # final weights (model.pt), loadable by create_model
    metrics_path: Path | None
    validation: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def _new_epoch_acc() -> dict[str, Any]:
    return {"loss": 0.0, "windows": 0, "images": 0, "seconds": 0.0}


def train(
    source: str | os.PathLike,
    settings: TrainSettings | Mapping[str, Any] | None = None,
    *,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    stop_after: int | None = None,
    max_steps: int | None = None,
    **overrides: Any,
) -> TrainResult:
    """Pre-train a CLIP model on the image–caption pairs of ``source``.

    ``source`` is a run GeoPackage or a pairs CSV/parquet file; ``settings`` (a
    :class:`~urbangeo.settings.TrainSettings` or a mapping) and keyword ``overrides`` of its
    fields set everything else; ``steps``, ``samples`` or ``epochs`` sizes the run
    (:mod:`~urbangeo.model.training.budget`). Checkpoints go to ``run_dir/checkpoints/<name>/``
    (``last.pt``: the full state every ``checkpoint_minutes`` or ``checkpoint_every`` steps, at
    the end and on Ctrl-C; ``model.pt``: the final weights), metrics to
    ``run_dir/train_metrics.csv``; ``run_dir`` defaults to the source's folder. ``resume``
    continues from ``last.pt`` exactly (bit-identical on CPU); without it an existing
    checkpoint needs ``overwrite``. ``stop_after`` stops (with a checkpoint) after that many
    optimizer steps in all, to resume later (``max_steps``: its old name). Under ``torchrun``
    each process trains its share with DistributedDataParallel.
    A large architecture from a random init on a CPU is refused unless ``from_scratch``.
    """
    stop_after = stop_after_keyword(stop_after, max_steps)
    cfg = run_settings(settings, overrides).resolved()
    if stop_after is not None and stop_after < 1:
        raise InputError(f"stop_after must be at least 1; got {stop_after}")
    _check_architecture(cfg.model)
    source = Path(source)
    run_dir = Path(run_dir) if run_dir is not None else source.parent
    info = init_distributed(cfg.device)
    try:
        cfg.check_device(pick_device(cfg.device, info.local_rank).type)
        trainer = Trainer(cfg, source, run_dir, info, resume, overwrite)
        return trainer.run(stop_after=stop_after)
    finally:
        if info.owns_group:
            dist.destroy_process_group()


#: What :class:`TrainResult` takes from the trainer as it is.
_RESULT_STATE = (
    "model",
    "teacher",
    "img_queue",
    "txt_queue",
    "step",
    "total_steps",
    "finished",
    "validation",
)


class Trainer:
    """One training run: data, model, teacher, optimizer and the loop (see :func:`train`)."""

    def __init__(
        self,
        cfg: TrainSettings,
        source: Path,
        run_dir: Path,
        info: DistInfo,
        resume: bool,
        overwrite: bool,
    ) -> None:
        self.cfg = cfg = cfg.resolved()
        assert cfg.name is not None  # resolved() names the run after its mode by default
        self.info = info
        ckpt_dir = run_dir / C.CHECKPOINTS_DIR / cfg.name
        self.last_path, self.model_path = ckpt_dir / LAST_CHECKPOINT, ckpt_dir / MODEL_FILE
        state = resume_state(
            self.last_path, cfg, resume=resume, overwrite=overwrite, main=info.is_main
        )
        self.device = pick_device(cfg.device, info.local_rank)
        self.amp_dtype = resolve_precision(cfg.precision, self.device)
        self.pairs = load_training_pairs(source, cfg, main=info.is_main)
        self._build_model(state)
        #: Pairs per micro-batch and process: the setting's, or the size auto chose.
        self.batch_size = batch_size_for(self, state)
        self._build_optimizer()
        self.step = self.epoch = self.position = 0
        self.epoch_acc = _new_epoch_acc()
        self.failed: set[int] = set()
        self.validation: dict[str, float] = {}
        self.metrics = MetricsLog(run_dir / METRICS_CSV, cfg.name, info.is_main)
        self.finished = False
        self.saved_step: int | None = None  # of the last checkpoint written or resumed
        self.stop = StopRequest(enabled=False)
        self.clock = CheckpointClock(cfg)
        if state is not None:
            self._restore(state)
        else:
            self.metrics.truncate()

    # ---- setup

    def _build_model(self, state: dict[str, Any] | None = None) -> None:
        cfg, info, device = self.cfg, self.info, self.device
        assert cfg.context_length is not None  # set by cfg.resolved()
        seed_everything(cfg.seed)
        chosen = cfg.pick("pretrained", "checkpoint", "context_length")
        # checkpoint_norm: decided here, see _image_norm
        bundle = create_model(cfg.model, device=device, checkpoint_norm=False, **chosen)
        train_paths = self.pairs.train[C.PATH].tolist()
        self.image_norm = choose_image_norm(
            cfg, bundle.model, train_paths, state, main=info.is_main
        )
        if self.image_norm is not None:
            bundle = with_image_normalization(bundle, *self.image_norm)
        self.model = model = bundle.model
        use_threads(model)  # small models run fastest on one thread, above all on a busy machine
        self.n_trainable, self.n_params = apply_freezing(model, cfg.train, cfg.train_last_n)
        if self.n_trainable == 0:
            raise InputError("No parameter is left to train.", hint="Check --train.")
        self.teacher = self.img_queue = self.txt_queue = None
        if cfg.distill:
            self.teacher = EMATeacher(model, cfg.momentum).to(device)
            if cfg.queue_size:
                dim = embed_dim(model)
                self.img_queue = FeatureQueue(dim, cfg.queue_size).to(device)
                self.txt_queue = FeatureQueue(dim, cfg.queue_size).to(device)
        self.module: nn.Module = ContrastiveModule(model)
        if info.enabled:
            self.module = DDP(
                self.module, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.clip_loss = None
        if not cfg.distill:
            from open_clip import ClipLoss

            self.clip_loss = ClipLoss(
                gather_with_grad=True, rank=info.rank, world_size=info.world_size
            )
        transform = bundle.preprocess_train if cfg.augment else bundle.preprocess
        self.train_set = ImageDataset(
            train_paths,
            transform,
            augment_seed=cfg.seed if cfg.augment else None,
        )
        self.val_set = ImageDataset(self.pairs.val[C.PATH].tolist(), bundle.preprocess)
        self.sampler = ResumableSampler(
            len(self.train_set), num_replicas=info.world_size, rank=info.rank, seed=cfg.seed
        )

    def _build_optimizer(self) -> None:
        cfg = self.cfg
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, cfg.weight_decay), lr=cfg.lr, fused=fused_ok(self.device)
        )
        self.n_batches = batches_per_epoch(
            len(self.pairs.train), self.batch_size, self.info.world_size
        )
        self.budget = training_budget(
            cfg, self.n_batches, self.info.world_size, batch_size=self.batch_size
        )
        self.total_steps = self.budget.total_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_schedule(cfg, self.total_steps)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    # ---- checkpoints

    def _restore(self, state: dict[str, Any]) -> None:
        restore_training_state(self, state)
        self.saved_step = self.step
        self.metrics.truncate(after_step=self.step, epochs_done=self.epoch)
        if self.info.is_main:
            message(
                f"Resuming {self.cfg.name} from step {self.step:,} of {self.total_steps:,} "
                f"({self.last_path})."
            )

    def save(self, final: bool) -> None:
        """Write ``last.pt`` (and ``model.pt`` when ``final``) atomically; rank 0 only.

        Weights, teacher or queues holding NaN or infinity are never saved: that raises the
        divergence error and ``last.pt`` keeps the last good state.
        """
        if not self.info.is_main:
            return
        bad = non_finite(weight_tensors(self))
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise self._diverged(f"{len(bad)} tensor(s) hold NaN or infinity ({shown})", self.step)
        save_training_state(self, final)
        self.saved_step = self.step
        self.clock.saved()

    # ---- the loop

    def run(self, stop_after: int | None = None) -> TrainResult:
        """Train to the end of the budget (or to step ``stop_after``, with a checkpoint),
        validating after epochs; returns the result."""
        info, total = self.info, self.total_steps
        stopped = False
        self.stop = StopRequest(enabled=not info.enabled)
        self.clock.saved()  # the minutes to the first checkpoint count from here
        with self.stop, step_progress(info.is_main, total, self.step) as bar:
            while self.epoch < self.budget.epochs and not self.finished:
                batches = None  # the last epoch's workers stop here, under the stop request
                batches = self._epoch_batches()
                while self.position < self.n_batches and self.step < total:
                    self._stop_if_asked(whole=True)
                    self._train_step(batches, bar)
                    if stop_after is not None and self.step >= stop_after:
                        self.save(final=False)
                        stopped = True
                        break
                    if self.step < total and self.clock.due(self.step):  # the end saves anyway
                        self.save(final=False)
                if stopped:
                    break
                self._stop_if_asked(whole=True)
                self._end_epoch()
            batches = None
            self._stop_if_asked(whole=True)
            if not stopped and not self.finished:
                self.finished = True
                self.save(final=True)
        if info.enabled:
            dist.barrier()
        if info.is_main:
            self.pairs.warn_truncated()
        if self.failed and info.is_main:
            warnings.warn(
                f"{len(self.failed)} training image(s) could not be decoded and were skipped.",
                UrbangeoWarning,
                stacklevel=3,
            )
        return self._result()

    def _stop_if_asked(self, *, whole: bool) -> None:
        """Raise KeyboardInterrupt if Ctrl-C was pressed; first save a checkpoint if the state
        is ``whole`` (between steps or during validation, not inside a step)."""
        if not self.stop.requested:
            return
        if whole and self.saved_step != self.step:
            self.save(final=False)
        if self.info.is_main:
            message(interrupted_message(self), level="warning")
        raise KeyboardInterrupt

    def _diverged(self, what: str, step: int) -> InputError:
        return diverged_error(self, what, step)

    def _epoch_batches(self) -> Iterator[dict[str, Tensor]]:
        cfg = self.cfg
        self.train_set.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch)
        self.sampler.set_start(self.position * self.batch_size)
        loader = DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=cfg.num_workers,
            collate_fn=collate_images,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=ignore_sigint,
            # Its own generator: creating the iterator leaves the global RNG untouched.
            generator=torch.Generator().manual_seed(cfg.seed + self.epoch),
        )
        self.module.train()
        return iter(loader)

    def _forward_loss(
        self,
        images: Tensor,
        tokens: Tensor,
        *,
        module: nn.Module | None = None,
        clip_loss: Any = None,
    ) -> tuple[Tensor, dict, Any]:
        """Student (and teacher) features and the loss; returns (loss, parts, teacher feats).

        ``module`` and ``clip_loss`` replace the trainer's (the batch-size probe runs without
        DDP's and the loss's collectives)."""
        module = self.module if module is None else module
        clip_loss = self.clip_loss if clip_loss is None else clip_loss
        with autocast(self.device, self.amp_dtype):
            img_s, txt_s, scale = module(images, tokens)
            if self.teacher is None:
                assert clip_loss is not None
                loss = clip_loss(img_s.float(), txt_s.float(), scale.clamp(max=MAX_LOGIT_SCALE))
                return loss, {"loss_c": loss.detach()}, None
            with torch.no_grad():
                img_t = self.teacher.encode_image(images, normalize=True)
                txt_t = encode_text(self.teacher.module, tokens, normalize=True)
            assert self.cfg.mu is not None  # set by cfg.resolved()
            loss, parts = momentum_distillation_loss(
                img_s, txt_s, img_t, txt_t, self.img_queue, self.txt_queue, scale, mu=self.cfg.mu
            )
            return loss, parts, (img_t, txt_t)

    def _train_step(self, batches: Iterator[dict[str, Tensor]], bar: Any) -> None:
        """One optimizer step over an accumulation window of micro-batches."""
        cfg, info = self.cfg, self.info
        window = min(cfg.accum_steps, self.n_batches - self.position)
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        if self.teacher is not None:
            # once per optimizer step, before its targets
            self.teacher.update(self.model, trainable_only=True)
        synced = False
        losses: list[float] = []
        parts_sum: dict[str, float] = {}
        images_seen = 0
        for micro in range(window):
            if micro:
                self._stop_if_asked(whole=False)
            batch = next(batches)
            self.failed.update(batch["failed"].tolist())
            sizes = all_sizes(batch["index"].numel(), info, self.device)
            if min(sizes) == 0:  # every image of some rank's batch failed to decode
                continue
            # The plain contrastive loss gathers features with gradient: equal sizes needed.
            n = min(sizes) if self.clip_loss is not None else batch["index"].numel()
            images = batch["images"][:n].to(self.device, non_blocking=True)
            tokens = self.pairs.train_tokens[batch["index"][:n]].to(self.device, torch.long)
            sync = micro == window - 1 or not info.enabled
            ddp = self.module if isinstance(self.module, DDP) else None  # a DDP when info.enabled
            with nullcontext() if sync or ddp is None else ddp.no_sync():
                loss, parts, teacher_feats = self._forward_loss(images, tokens)
                self.scaler.scale(loss / window).backward()
            synced = synced or (sync and info.enabled)
            img_q, txt_q = self.img_queue, self.txt_queue  # both or neither
            if teacher_feats is not None and img_q is not None and txt_q is not None:
                img_t, txt_t = teacher_feats  # enqueued after the loss that used the old queue
                img_q.enqueue(concat_all_gather(img_t.float()))
                txt_q.enqueue(concat_all_gather(txt_t.float()))
            losses.append(float(loss.detach()))
            for key, value in parts.items():
                parts_sum[key] = parts_sum.get(key, 0.0) + float(value)
            images_seen += n
        self.position += window
        bad = next((x for x in losses if not math.isfinite(x)), None)
        if any_rank(bad is not None, info, self.device):
            where = "another process's loss" if bad is None else f"the loss ({bad})"
            raise self._diverged(f"{where} is not a finite number", self.step + 1)
        if info.enabled and not synced:
            allreduce_grads(self.trainable, info.world_size)
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.trainable, cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        with torch.no_grad():
            cast(ClipModel, self.model).logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))
        self.step += 1
        self._log_step(losses, parts_sum, images_seen, time.perf_counter() - started, bar)

    def _log_step(
        self,
        losses: list[float],
        parts_sum: dict[str, float],
        images_seen: int,
        seconds: float,
        bar: Any,
    ) -> None:
        count = max(1, len(losses))
        nan = float("nan")
        totals = torch.tensor(
            [
                sum(losses) / count if losses else nan,
                parts_sum.get("loss_c", nan) / count,
                parts_sum.get("loss_d", nan) / count,
                float(images_seen),
            ],
            device=self.device,
        )
        logged: list[float] = mean_across(totals, self.info).tolist()
        images = logged[3] * self.info.world_size
        rate = images / max(seconds, 1e-9)
        acc = self.epoch_acc
        acc["loss"] += logged[0]
        acc["windows"] += 1
        acc["images"] += round(images)
        acc["seconds"] += seconds
        self.metrics.write(
            {
                "kind": "step",
                "epoch": self.epoch + 1,
                "step": self.step,
                "lr": float(self.scheduler.get_last_lr()[0]),
                "loss": logged[0],
                "loss_c": logged[1],
                "loss_d": logged[2],
                "logit_scale": float(cast(ClipModel, self.model).logit_scale.detach().exp()),
                "images": round(images),
                "images_per_s": rate,
                "seconds": seconds,
            }
        )
        bar.update(1, status=f"epoch {self.epoch + 1} loss {logged[0]:.3f} {rate:.1f} img/s")

    def validate(self) -> dict[str, float]:
        """Retrieval metrics of the current student on the held-out pairs ({} if too few)."""
        if len(self.val_set) < 2:
            return {}
        img, txt, kept = encode_pairs(
            self.model,
            self.val_set,
            self.pairs.val_tokens,
            batch_size=self.batch_size,
            device=self.device,
            dtype=self.amp_dtype,
            num_workers=self.cfg.num_workers,
            check=lambda: self._stop_if_asked(whole=True),
            worker_init_fn=ignore_sigint,
        )
        if len(kept) < 2:
            return {}
        return retrieval_metrics(img, txt, self.pairs.val_groups[kept.numpy()])

    def _end_epoch(self) -> None:
        cfg, info, acc = self.cfg, self.info, self.epoch_acc
        if (self.epoch + 1) % cfg.val_every == 0 or self.epoch + 1 == self.budget.epochs:
            if info.is_main:
                self.validation = self.validate()
            if info.enabled:
                dist.barrier()
        windows = max(1, acc["windows"])
        self.metrics.write(
            {
                "kind": "epoch",
                "epoch": self.epoch + 1,
                "step": self.step,
                "lr": float(self.scheduler.get_last_lr()[0]),
                "loss": acc["loss"] / windows,
                "logit_scale": float(cast(ClipModel, self.model).logit_scale.detach().exp()),
                "images": acc["images"],
                "images_per_s": acc["images"] / max(acc["seconds"], 1e-9),
                "seconds": acc["seconds"],
                "failed_images": len(self.failed),
                **self.validation,
            }
        )
        if info.is_main and self.validation:
            v = self.validation
            message(
                f"epoch {self.epoch + 1}/{self.budget.epochs}: loss {acc['loss'] / windows:.4f}, "
                f"val R@1 image->text {v['i2t_r1']:.3f} text->image {v['t2i_r1']:.3f} "
                f"(chance {v['chance_r1']:.3f}, {int(v['val_pairs'])} pairs)"
            )
        self.epoch += 1
        self.position = 0
        self.epoch_acc = _new_epoch_acc()

    def _result(self) -> TrainResult:
        main = self.info.is_main
        counts = {
            "pairs": self.pairs.n_pairs,
            "pairs_train": len(self.pairs.train),
            "pairs_val": len(self.pairs.val),
            "missing_images": self.pairs.n_missing,
            "failed_images": len(self.failed),
            "truncated_captions": self.pairs.n_truncated,
            "steps": self.step,
            "batch_size": self.batch_size,
            "trainable_params": self.n_trainable,
            "params": self.n_params,
        }
        state = {name: getattr(self, name) for name in _RESULT_STATE}
        files: dict[str, Any] = {
            "checkpoint": self.last_path,
            "model_path": self.model_path if self.finished else None,
            "metrics_path": self.metrics.path,
        }
        if not main:  # the other ranks write no files
            files = dict.fromkeys(files)
        return TrainResult(config=self.cfg, counts=counts, **state, **files)
