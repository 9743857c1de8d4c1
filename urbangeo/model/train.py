"""UrbanLN pre-training: CLIP + IPSI + momentum self-distillation on image–caption pairs.

:func:`train` runs the whole loop: pairs from a run GeoPackage (or a pairs file), a
deterministic validation split, AdamW with linear warm-up and cosine decay, gradient
accumulation, mixed precision on CUDA (bf16 autocast, or fp16 with a GradScaler), parameter
freezing, the EMA teacher with its two feature queues, checkpoints that resume exactly, a
``train_metrics.csv`` and image↔text retrieval on the held-out pairs after every epoch.
Launched by ``torchrun`` it trains with DistributedDataParallel, one process per GPU (or CPU
process with gloo), the queues filled from all ranks.

Modes (the paper's model and its ablations / baseline, :data:`MODES`):

============  =======  ============================================  ====
mode          tokens   loss                                           mu
============  =======  ============================================  ====
urbanln       248      teacher + queues, (1-mu) L_C + mu L_D          0.5
no-ipsi       77       same as urbanln, native text context           0.5
no-distill    248      plain CLIP contrastive loss (no teacher)       —
urbanclip     77       plain CLIP contrastive loss (no teacher)       —
============  =======  ============================================  ====

Freezing (``train=``): the paper reports far fewer trainable parameters than UrbanCLIP and
UrbanVLP ("minimal fine-tuning" of pretrained CLIP, AdamW at lr 1e-7) but does not say which
parameters it freezes. ``both`` (default) trains everything, as Long-CLIP does; ``image`` /
``text`` train one tower (the other frozen; ``logit_scale`` always trains); ``last-n`` trains
the last ``train_last_n`` transformer blocks of each tower, their final norms and projections,
the (IPSI-stretched) text positional embedding and ``logit_scale``. Region embeddings come from
the image tower, so ``text`` alone never changes them.

Padding after end-of-text never influences CLIP's text features (causal attention, pooling at
end-of-text), so every batch is cut to its longest caption before the text tower
(:func:`encode_text`): same features, much less work for 248-token contexts.
"""

from __future__ import annotations

import csv
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from urbangeo import constants as C
from urbangeo.errors import InputError, OutputError, UrbangeoWarning
from urbangeo.model.attention import causal_mask_of, transformer_forward
from urbangeo.model.clip import (
    LongTokenizer,
    _check_architecture,
    brings_own_weights,
    checkpoint_metadata,
    create_model,
    recorded_image_norm,
    unnormalized_transform,
    with_image_normalization,
)
from urbangeo.model.data import (
    PRECISIONS,
    ImageDataset,
    ResumableSampler,
    autocast,
    batches_per_epoch,
    channel_stats,
    collate_images,
    drop_missing_files,
    fingerprint,
    load_pairs,
    pick_device,
    resolve_precision,
    split_pairs,
    tokenize_captions,
)
from urbangeo.model.distill import (
    DEFAULT_MOMENTUM,
    DEFAULT_MU,
    DEFAULT_QUEUE_SIZE,
    MAX_LOGIT_SCALE,
    EMATeacher,
    FeatureQueue,
    concat_all_gather,
    momentum_distillation_loss,
)
from urbangeo.progress import message, progress

METRICS_CSV = "train_metrics.csv"
LAST_CHECKPOINT = "last.pt"
MODEL_FILE = "model.pt"
CHECKPOINT_FORMAT = "urbangeo-train-state"
TRAIN_CHOICES = ("both", "image", "text", "last-n")
#: Image normalisation: the architecture's own (CLIP's statistics), the training images'
#: per-channel statistics, or ``auto``: the data's for a random init, else the weights'.
IMAGE_NORMS = ("auto", "model", "data")
METRIC_COLUMNS = (
    "run",
    "kind",
    "epoch",
    "step",
    "lr",
    "loss",
    "loss_c",
    "loss_d",
    "logit_scale",
    "images",
    "images_per_s",
    "seconds",
    "failed_images",
    "val_pairs",
    "i2t_r1",
    "i2t_r5",
    "t2i_r1",
    "t2i_r5",
    "chance_r1",
)
#: Settings that may change between an interrupted run and its resumption.
RESUME_FREE = frozenset(
    # image_norm: the interrupted run's recorded statistics decide on resumption
    {
        "num_workers",
        "checkpoint_every",
        "device",
        "val_every",
        "checkpoint",
        "pretrained",
        "image_norm",
    }
)


@dataclass(frozen=True)
class ModeSpec:
    """What a training mode changes: text context, teacher + queues, default mu."""

    context_length: int
    distill: bool
    mu: float


MODES: dict[str, ModeSpec] = {
    "urbanln": ModeSpec(248, True, DEFAULT_MU),
    "no-ipsi": ModeSpec(77, True, DEFAULT_MU),
    "no-distill": ModeSpec(248, False, 0.0),
    "urbanclip": ModeSpec(77, False, 0.0),
}


@dataclass
class TrainConfig:
    """Every setting of a training run (``None``: the mode's default)."""

    model: str = "ViT-B-16"
    pretrained: str | None = None
    checkpoint: str | None = None  # initial weights (a local state dict), not a resume point
    mode: str = "urbanln"
    context_length: int | None = None
    mu: float | None = None
    queue_size: int | None = None
    momentum: float = DEFAULT_MOMENTUM
    kind: str = "all"
    epochs: int = 10
    batch_size: int = 64
    accum_steps: int = 1
    lr: float = 1e-6
    weight_decay: float = 0.1
    warmup_steps: int | None = None  # None: 5 % of all optimizer steps
    min_lr_ratio: float = 0.0
    grad_clip: float | None = None
    train: str = "both"
    train_last_n: int = 2
    precision: str = "auto"
    augment: bool = False
    image_norm: str = "auto"
    seed: int = 0
    val_fraction: float = 0.1
    val_every: int = 1
    checkpoint_every: int = 500
    num_workers: int = 0
    device: str | None = None
    name: str | None = None  # checkpoints/<name>/; default: the mode

    def resolved(self) -> TrainConfig:
        """A copy with the mode's defaults filled in, validated (raises InputError)."""
        if self.mode not in MODES:
            raise InputError(
                f"Unknown training mode {self.mode!r}.", hint=f"Use one of {', '.join(MODES)}."
            )
        spec = MODES[self.mode]
        if not spec.distill:
            for key, value in (("mu", self.mu), ("queue_size", self.queue_size)):
                if value not in (None, 0):
                    raise InputError(
                        f"Mode {self.mode!r} trains without the momentum teacher; {key} does not "
                        "apply.",
                        hint="Leave --mu and --queue-size out, or use --mode urbanln / no-ipsi.",
                    )
        cfg = replace(
            self,
            context_length=self.context_length or spec.context_length,
            mu=spec.mu if self.mu is None else float(self.mu),
            queue_size=(DEFAULT_QUEUE_SIZE if spec.distill else 0)
            if self.queue_size is None
            else int(self.queue_size),
            name=self.name or self.mode,
        )
        checks = [
            (cfg.epochs >= 1, "epochs must be at least 1"),
            (cfg.batch_size >= 1, "batch_size must be at least 1"),
            (cfg.accum_steps >= 1, "accum_steps must be at least 1"),
            (cfg.lr > 0, "lr must be positive"),
            (cfg.weight_decay >= 0, "weight_decay must be >= 0"),
            (cfg.warmup_steps is None or cfg.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (0 <= cfg.min_lr_ratio <= 1, "min_lr_ratio must be in [0, 1]"),
            (cfg.grad_clip is None or cfg.grad_clip > 0, "grad_clip must be positive"),
            (cfg.train in TRAIN_CHOICES, f"train must be one of {TRAIN_CHOICES}"),
            (cfg.train_last_n >= 1, "train_last_n must be at least 1"),
            (cfg.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
            (cfg.image_norm in IMAGE_NORMS, f"image_norm must be one of {IMAGE_NORMS}"),
            (0 <= cfg.momentum <= 1, "momentum must be in [0, 1]"),
            (0 <= cfg.mu <= 1, "mu must be in [0, 1]"),
            (cfg.queue_size >= 0, "queue_size must be >= 0"),
            (0 <= cfg.val_fraction < 1, "val_fraction must be in [0, 1)"),
            (cfg.val_every >= 1, "val_every must be at least 1"),
            (cfg.checkpoint_every >= 1, "checkpoint_every must be at least 1"),
            (cfg.num_workers >= 0, "num_workers must be >= 0"),
            (
                cfg.name.replace("-", "").replace("_", "").replace(".", "").isalnum(),
                "name may hold letters, digits, '-', '_' and '.' only",
            ),
        ]
        for ok, text in checks:
            if not ok:
                raise InputError(f"Invalid training setting: {text}.")
        return cfg

    @property
    def distill(self) -> bool:
        """Whether this mode trains with the EMA teacher and queues."""
        return MODES[self.mode].distill

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able settings."""
        return asdict(self)


@dataclass
class TrainResult:
    """What :func:`train` leaves behind."""

    model: nn.Module
    teacher: EMATeacher | None
    img_queue: FeatureQueue | None
    txt_queue: FeatureQueue | None
    config: TrainConfig
    step: int
    total_steps: int
    finished: bool
    checkpoint: Path | None  # full training state (last.pt)
    model_path: Path | None  # final weights (model.pt), loadable by create_model
    metrics_path: Path | None
    validation: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Model pieces
# --------------------------------------------------------------------------------------------


def _trimmable(model: nn.Module) -> bool:
    # causal attention and end-of-text pooling: the tokens after the last one cannot matter
    return (
        isinstance(getattr(model, "positional_embedding", None), nn.Parameter)
        and hasattr(model, "ln_final")
        and getattr(model, "text_pool_type", None) == "argmax"
        and causal_mask_of(model)
    )


def encode_text(model: nn.Module, tokens: Tensor, normalize: bool = True) -> Tensor:
    """``model.encode_text`` on tokens cut after the batch's last end-of-text token.

    Identical features (up to float rounding) for open_clip CLIP models, whose causal text
    tower pools at the end-of-text token; other models get their own ``encode_text``.
    """
    if not _trimmable(model) or tokens.ndim != 2 or tokens.shape[0] == 0:
        return model.encode_text(tokens, normalize=normalize)
    length = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    mask = model.attn_mask[:length, :length]  # a prefix of a causal mask is causal
    x = transformer_forward(model.transformer, x, mask, causal=True)
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    if model.text_projection is not None:
        proj = model.text_projection
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return nn.functional.normalize(x, dim=-1) if normalize else x


class ContrastiveModule(nn.Module):
    """``forward(images, tokens) -> (image features, text features, logit scale)``.

    The unit DistributedDataParallel wraps, so that both towers run inside its forward.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        img = self.model.encode_image(images, normalize=True)
        txt = encode_text(self.model, tokens, normalize=True)
        return img, txt, self.model.logit_scale.exp()


def _resblock_prefixes(model: nn.Module, tower: str) -> list[str]:
    """Names of the residual blocks of the image (``visual``) or text tower, in order."""
    prefixes = []
    for name, _module in model.named_modules():
        parent, _, index = name.rpartition(".")
        if not parent.endswith("resblocks") or not index.isdigit():
            continue
        if (tower == "image") == name.startswith("visual."):
            prefixes.append(name + ".")
    return prefixes


def _is_image_param(name: str) -> bool:
    return name.startswith("visual.")


def apply_freezing(model: nn.Module, train: str = "both", last_n: int = 2) -> tuple[int, int]:
    """Set ``requires_grad`` per :data:`TRAIN_CHOICES`; returns (trainable, total) counts."""
    if train not in TRAIN_CHOICES:
        raise InputError(f"train must be one of {TRAIN_CHOICES}; got {train!r}")
    keep: Callable[[str], bool]
    if train == "both":

        def keep(name: str) -> bool:
            return True

    elif train == "image":

        def keep(name: str) -> bool:
            return _is_image_param(name) or name.startswith("logit_")

    elif train == "text":

        def keep(name: str) -> bool:
            return not _is_image_param(name)

    else:
        image_blocks = _resblock_prefixes(model, "image")
        text_blocks = _resblock_prefixes(model, "text")
        if not image_blocks or not text_blocks:
            raise InputError(
                f"train='last-n' needs transformer towers; {type(model).__name__} has "
                f"{len(image_blocks)} image and {len(text_blocks)} text residual blocks.",
                hint="Use --train both, image or text for this architecture.",
            )
        chosen = tuple(image_blocks[-last_n:] + text_blocks[-last_n:])
        heads = (
            "visual.ln_post",
            "visual.proj",
            "visual.head",
            "ln_final",
            "text_projection",
            "positional_embedding",
            "text.ln_final",
            "text.text_projection",
            "text.positional_embedding",
            "logit_",
        )

        def keep(name: str) -> bool:
            return name.startswith(chosen) or name.startswith(heads)

    trainable = total = 0
    for name, param in model.named_parameters():
        param.requires_grad_(keep(name))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return trainable, total


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups; gains, biases, embeddings and ``logit_scale`` get no decay."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exclude = (
            param.ndim < 2
            or "bn" in name
            or "ln" in name
            or "bias" in name
            or "logit_scale" in name
            or "embedding" in name
        )
        (no_decay if exclude else decay).append(param)
    groups = [{"params": no_decay, "weight_decay": 0.0}]
    if decay:
        groups.insert(0, {"params": decay, "weight_decay": weight_decay})
    return groups


def warmup_cosine(step: int, *, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """LR multiplier at optimizer step ``step`` (0-based): linear warm-up, then cosine."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress_ = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress_))


class _Schedule:
    """Picklable LR lambda (a plain function would not survive ``torch.save`` of a scheduler)."""

    def __init__(self, warmup: int, total: int, min_ratio: float) -> None:
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio

    def __call__(self, step: int) -> float:
        return warmup_cosine(step, warmup=self.warmup, total=self.total, min_ratio=self.min_ratio)


# --------------------------------------------------------------------------------------------
# Retrieval
# --------------------------------------------------------------------------------------------


def retrieval_metrics(
    img: Tensor, txt: Tensor, groups: np.ndarray | list[int] | None = None
) -> dict[str, float]:
    """Image→text and text→image recall@1/5 of paired features (row i of each is a pair).

    ``groups`` marks interchangeable pairs (same caption text): retrieving any member of the
    true group counts. ``chance_r1`` is the R@1 of a random ranking.
    """
    n = img.shape[0]
    groups_t = torch.as_tensor(np.arange(n) if groups is None else np.asarray(groups))
    same = groups_t[:, None] == groups_t[None, :]
    sim = (
        nn.functional.normalize(img.float(), dim=-1)
        @ nn.functional.normalize(txt.float(), dim=-1).T
    )
    neg_inf = torch.tensor(float("-inf"))
    best_i2t = torch.where(same, sim, neg_inf).amax(dim=1, keepdim=True)
    rank_i2t = ((sim > best_i2t) & ~same).sum(dim=1)
    best_t2i = torch.where(same, sim, neg_inf).amax(dim=0, keepdim=True)
    rank_t2i = ((sim > best_t2i) & ~same).sum(dim=0)
    out = {"val_pairs": float(n), "chance_r1": float(same.sum(dim=1).float().mean() / n)}
    for k in (1, 5):
        out[f"i2t_r{k}"] = float((rank_i2t < k).float().mean())
        out[f"t2i_r{k}"] = float((rank_t2i < k).float().mean())
    return out


@torch.inference_mode()
def encode_pairs(
    model: nn.Module,
    dataset: ImageDataset,
    tokens: Tensor,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    num_workers: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Normalised image and text features of a pair dataset, and the indices decoded."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_images,
    )
    imgs, txts, kept = [], [], []
    try:
        for batch in loader:
            if batch["index"].numel() == 0:
                continue
            with autocast(device, dtype):
                imgs.append(model.encode_image(batch["images"].to(device), normalize=True).float())
                tok = tokens[batch["index"]].to(device, torch.long)
                txts.append(encode_text(model, tok, normalize=True).float())
            kept.append(batch["index"])
    finally:
        model.train(was_training)
    if not kept:
        empty = torch.empty(0)
        return empty, empty, torch.empty(0, dtype=torch.long)
    return torch.cat(imgs).cpu(), torch.cat(txts).cpu(), torch.cat(kept)


# --------------------------------------------------------------------------------------------
# Distributed helpers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and shows progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether several processes train together."""
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE > 1), gloo on CPU, nccl on CUDA."""
    if dist.is_available() and dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def _all_sizes(n: int, info: DistInfo, device: torch.device) -> list[int]:
    if not info.enabled:
        return [n]
    local = torch.tensor([n], device=device)
    sizes = [torch.zeros_like(local) for _ in range(info.world_size)]
    dist.all_gather(sizes, local)
    return [int(s) for s in sizes]


def _mean_across(values: Tensor, info: DistInfo) -> Tensor:
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values)
        values /= info.world_size
    return values


# --------------------------------------------------------------------------------------------
# Checkpoints and metrics files
# --------------------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace``: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def image_norm_source(cfg: TrainConfig) -> str:
    """Where a training run's image normalisation comes from: ``model`` (the architecture's,
    for pretrained weights), ``checkpoint`` (what the initial checkpoint recorded) or ``data``
    (the training images' statistics, for a random init); see :data:`IMAGE_NORMS`."""
    if cfg.image_norm != "auto":
        return cfg.image_norm
    if cfg.checkpoint is not None:
        return "checkpoint"
    if cfg.pretrained is not None or brings_own_weights(cfg.model):
        return "model"
    return "data"


def model_metadata(
    config: TrainConfig, image_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None
) -> dict[str, Any]:
    """What embedding needs to rebuild the model from a checkpoint.

    ``image_norm``: the (mean, std) the model was trained with when not its architecture's.
    """
    meta: dict[str, Any] = {
        "model": config.model,
        "context_length": int(config.context_length or 77),
        "mode": config.mode,
        "name": config.name,
        "format": "open_clip state_dict",
    }
    if image_norm is not None:
        meta["image_mean"], meta["image_std"] = list(image_norm[0]), list(image_norm[1])
    return meta


def load_train_state(path: str | os.PathLike) -> dict[str, Any]:
    """A training checkpoint written by :func:`train` (tensors on CPU)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(
            f"Cannot read the training checkpoint {path}: {exc}",
            hint="Start over with --overwrite, or point --name at another run.",
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not a training checkpoint written by urbangeo train.")
    return state


class MetricsLog:
    """Rows of ``train_metrics.csv`` for one named run (other runs' rows are kept)."""

    def __init__(self, path: Path, run: str, enabled: bool) -> None:
        self.path, self.run, self.enabled = path, run, enabled

    def truncate(self, after_step: int | None = None, epochs_done: int = 0) -> None:
        """Drop this run's rows: all of them, or, when resuming, those the checkpoint has not
        seen (steps after ``after_step``, epoch rows after ``epochs_done`` epochs)."""
        if not self.enabled or not self.path.exists():
            return
        frame = pd.read_csv(self.path, dtype={"run": str})
        mine = frame["run"] == self.run
        if after_step is None:
            drop = mine
        else:
            unseen_epoch = (frame["kind"] == "epoch") & (frame["epoch"] > epochs_done)
            drop = mine & ((frame["step"] > after_step) | unseen_epoch)
        if drop.any():
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            frame[~drop].to_csv(tmp, index=False)
            os.replace(tmp, self.path)

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (columns :data:`METRIC_COLUMNS`)."""
        if not self.enabled:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            out = {"run": self.run}
            for key, value in row.items():
                out[key] = f"{value:.6g}" if isinstance(value, float) else value
            writer.writerow(out)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@contextmanager
def _maybe_progress(enabled: bool, total: int, done: int) -> Iterator[Any]:
    if not enabled:

        class _Null:
            def update(self, n: int = 1, *, status: str | None = None) -> None:
                pass

        yield _Null()
        return
    with progress(total, task="train", unit="step") as bar:
        if done:
            bar.update(done, status="resumed")
        yield bar


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _embed_dim(model: nn.Module) -> int:
    proj = getattr(model, "text_projection", None)
    if isinstance(proj, nn.Parameter):
        return int(proj.shape[1])
    if isinstance(proj, nn.Linear):
        return int(proj.out_features)
    return int(model.visual.output_dim)


def _fused_ok(device: torch.device) -> bool:
    """Whether AdamW's fused kernel exists for ``device`` (CPU and CUDA; several times faster)."""
    return device.type in ("cpu", "cuda")


def _allreduce_grads(params: list[nn.Parameter], world: int) -> None:
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= world


def _check_resume_config(state: dict[str, Any], config: TrainConfig, path: Path) -> None:
    saved = state["config"]
    now = config.to_dict()
    diff = [k for k in now if k not in RESUME_FREE and saved.get(k) != now[k]]
    if diff:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in diff[:6])
        raise InputError(
            f"Cannot resume {path}: settings differ from the interrupted run ({shown}).",
            hint="Resume with the same settings, or start over with --overwrite (or another "
            "--name).",
        )


def train(
    source: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    max_steps: int | None = None,
    **overrides: Any,
) -> TrainResult:
    """Pre-train a CLIP model on the image–caption pairs of ``source``.

    ``source`` is a run GeoPackage or a pairs CSV/parquet file; ``config`` (or keyword
    ``overrides`` of :class:`TrainConfig` fields) sets everything else. Checkpoints go to
    ``run_dir/checkpoints/<name>/`` (``last.pt``: full state every ``checkpoint_every`` steps
    and at the end; ``model.pt``: the final weights), metrics to ``run_dir/train_metrics.csv``;
    ``run_dir`` defaults to the source's folder. ``resume`` continues from ``last.pt`` exactly
    (bit-identical on CPU); without it an existing checkpoint needs ``overwrite``.
    ``max_steps`` stops (with a checkpoint) after that many optimizer steps in all, to resume
    later. Under ``torchrun`` each process trains its share with DistributedDataParallel.
    """
    cfg = replace(config or TrainConfig(), **overrides).resolved()
    if max_steps is not None and max_steps < 1:
        raise InputError(f"max_steps must be at least 1; got {max_steps}")
    _check_architecture(cfg.model)
    source = Path(source)
    run_dir = Path(run_dir) if run_dir is not None else source.parent
    info = init_distributed(cfg.device)
    try:
        trainer = Trainer(cfg, source, run_dir, info, resume=resume, overwrite=overwrite)
        return trainer.run(max_steps=max_steps)
    finally:
        if info.owns_group:
            dist.destroy_process_group()


class Trainer:
    """One training run: data, model, teacher, optimizer and the loop (see :func:`train`)."""

    def __init__(
        self,
        cfg: TrainConfig,
        source: Path,
        run_dir: Path,
        info: DistInfo,
        *,
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.cfg = cfg = cfg.resolved()
        self.info = info
        ckpt_dir = run_dir / C.CHECKPOINTS_DIR / cfg.name
        self.last_path, self.model_path = ckpt_dir / LAST_CHECKPOINT, ckpt_dir / MODEL_FILE
        state = self._previous_state(resume, overwrite)
        self.device = pick_device(cfg.device, info.local_rank)
        self.amp_dtype = resolve_precision(cfg.precision, self.device)
        self._load_data(source)
        self._build_model(state)
        self._build_optimizer()
        self.step = self.epoch = self.position = 0
        self.epoch_acc = _new_epoch_acc()
        self.failed: set[int] = set()
        self.validation: dict[str, float] = {}
        self.metrics = MetricsLog(run_dir / METRICS_CSV, cfg.name, info.is_main)
        self.finished = False
        if state is not None:
            self._restore(state)
        else:
            self.metrics.truncate()

    # ---- setup

    def _previous_state(self, resume: bool, overwrite: bool) -> dict[str, Any] | None:
        state = None
        if self.last_path.exists():
            if resume:
                state = load_train_state(self.last_path)
                _check_resume_config(state, self.cfg, self.last_path)
            elif not overwrite:
                raise OutputError(
                    f"A training checkpoint already exists: {self.last_path}.",
                    hint="Pass --resume to continue it, --overwrite to start over, or --name to "
                    "train another model beside it.",
                )
        elif resume and self.info.is_main:
            message(f"No checkpoint at {self.last_path}; starting from the beginning.")
        if self.info.is_main:
            try:
                self.last_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(
                    f"Cannot create {self.last_path.parent}: {exc.strerror}."
                ) from exc
        return state

    def _load_data(self, source: Path) -> None:
        cfg, main = self.cfg, self.info.is_main
        pairs = load_pairs(source, kind=cfg.kind)
        with warnings.catch_warnings():
            if not main:
                warnings.simplefilter("ignore", UrbangeoWarning)
            pairs, self.n_missing = drop_missing_files(pairs)
        if pairs.empty:
            raise InputError(
                f"None of the images of {source} exist on disk.",
                hint="Image paths are relative to the GeoPackage's folder; check images/.",
            )
        self.n_pairs = len(pairs)
        self.train_pairs, self.val_pairs = split_pairs(pairs, cfg.val_fraction)
        tokenizer = LongTokenizer.for_model(cfg.model, cfg.context_length)
        self.train_tokens, n_train = tokenize_captions(
            self.train_pairs[C.CAPTION].tolist(), tokenizer
        )
        self.val_tokens, n_val = tokenize_captions(self.val_pairs[C.CAPTION].tolist(), tokenizer)
        self.n_truncated = n_train + n_val
        if self.n_truncated and main:
            warnings.warn(
                f"{self.n_truncated} of {len(pairs)} captions are longer than "
                f"{cfg.context_length} tokens and were truncated (end-of-text kept).",
                UrbangeoWarning,
                stacklevel=4,
            )
        self.val_groups = pd.factorize(self.val_pairs[C.CAPTION])[0]
        self.data_fingerprint = fingerprint(self.train_pairs)

    def _image_norm(
        self, bundle: Any, state: dict[str, Any] | None
    ) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """The (mean, std) to normalise images with, or None for the architecture's own.

        A model trained from scratch learns faster from inputs standardised by its own data:
        rendered maps and aerial tiles sit far from CLIP's statistics, and a random encoder
        fed them maps every image to nearly the same feature.
        """
        cfg = self.cfg
        if state is not None:  # resuming: exactly what the interrupted run used
            return recorded_image_norm(state.get("urbangeo") or {})
        source = image_norm_source(cfg)
        if source == "checkpoint":  # fine-tuning keeps its inputs as they were
            return recorded_image_norm(checkpoint_metadata(cfg.checkpoint))
        if source == "model":
            return None
        stats = channel_stats(
            self.train_pairs[C.PATH].tolist(), unnormalized_transform(bundle.model), seed=cfg.seed
        )
        if stats is None:
            if self.info.is_main:
                warnings.warn(
                    "No training image could be read for the image statistics; the model's own "
                    "normalisation is used.",
                    UrbangeoWarning,
                    stacklevel=4,
                )
            return None
        if self.info.is_main:
            mean, std = (", ".join(f"{v:.3f}" for v in values) for values in stats)
            message(f"Images normalised by the training set's statistics: mean {mean}, std {std}.")
        return stats

    def _build_model(self, state: dict[str, Any] | None = None) -> None:
        cfg, info, device = self.cfg, self.info, self.device
        _seed_everything(cfg.seed)
        bundle = create_model(
            cfg.model,
            pretrained=cfg.pretrained,
            checkpoint=cfg.checkpoint,
            context_length=cfg.context_length,
            device=device,
            checkpoint_norm=False,  # decided here, see _image_norm
        )
        self.image_norm = self._image_norm(bundle, state)
        if self.image_norm is not None:
            bundle = with_image_normalization(bundle, *self.image_norm)
        self.model = model = bundle.model
        self.n_trainable, self.n_params = apply_freezing(model, cfg.train, cfg.train_last_n)
        if self.n_trainable == 0:
            raise InputError("No parameter is left to train.", hint="Check --train.")
        self.teacher = self.img_queue = self.txt_queue = None
        if cfg.distill:
            self.teacher = EMATeacher(model, cfg.momentum).to(device)
            if cfg.queue_size:
                dim = _embed_dim(model)
                self.img_queue = FeatureQueue(dim, cfg.queue_size).to(device)
                self.txt_queue = FeatureQueue(dim, cfg.queue_size).to(device)
        self.module: nn.Module = ContrastiveModule(model)
        if info.enabled:
            self.module = nn.parallel.DistributedDataParallel(
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
            self.train_pairs[C.PATH].tolist(),
            transform,
            augment_seed=cfg.seed if cfg.augment else None,
        )
        self.val_set = ImageDataset(self.val_pairs[C.PATH].tolist(), bundle.preprocess)
        self.sampler = ResumableSampler(
            len(self.train_set), num_replicas=info.world_size, rank=info.rank, seed=cfg.seed
        )

    def _build_optimizer(self) -> None:
        cfg = self.cfg
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, cfg.weight_decay), lr=cfg.lr, fused=_fused_ok(self.device)
        )
        self.n_batches = batches_per_epoch(
            len(self.train_pairs), cfg.batch_size, self.info.world_size
        )
        self.total_steps = math.ceil(self.n_batches / cfg.accum_steps) * cfg.epochs
        warmup = (
            cfg.warmup_steps if cfg.warmup_steps is not None else round(0.05 * self.total_steps)
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            _Schedule(min(warmup, self.total_steps), self.total_steps, cfg.min_lr_ratio),
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    # ---- checkpoints

    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("data_fingerprint") != self.data_fingerprint:
            raise InputError(
                f"Cannot resume {self.last_path}: the training pairs changed since it was written.",
                hint="Resume on the same data, or start over with --overwrite.",
            )
        self.model.load_state_dict(state["state_dict"])
        if self.teacher is not None:
            self.teacher.module.load_state_dict(state["teacher"])
        if self.img_queue is not None and self.txt_queue is not None:
            self.img_queue.load_state_dict(state["img_queue"])
            self.txt_queue.load_state_dict(state["txt_queue"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.position = int(state["position"])
        self.epoch_acc = dict(state["epoch_acc"])
        self.failed = set(state.get("failed", []))
        self.validation = dict(state.get("validation", {}))
        self.finished = bool(state.get("finished"))
        _set_rng_state(state["rng"])
        self.metrics.truncate(after_step=self.step, epochs_done=self.epoch)
        if self.info.is_main:
            message(
                f"Resuming {self.cfg.name} from step {self.step:,} of {self.total_steps:,} "
                f"({self.last_path})."
            )

    def save(self, final: bool) -> None:
        """Write ``last.pt`` (and ``model.pt`` when ``final``) atomically; rank 0 only."""
        if not self.info.is_main:
            return
        queues = {
            "img_queue": self.img_queue.state_dict() if self.img_queue is not None else None,
            "txt_queue": self.txt_queue.state_dict() if self.txt_queue is not None else None,
        }
        atomic_save(
            {
                "format": CHECKPOINT_FORMAT,
                "state_dict": self.model.state_dict(),
                "urbangeo": model_metadata(self.cfg, self.image_norm),
                "teacher": self.teacher.module.state_dict() if self.teacher is not None else None,
                **queues,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": _rng_state(),
                "step": self.step,
                "epoch": self.epoch,
                "position": self.position,
                "epoch_acc": self.epoch_acc,
                "failed": sorted(self.failed),
                "validation": self.validation,
                "finished": final,
                "config": self.cfg.to_dict(),
                "data_fingerprint": self.data_fingerprint,
            },
            self.last_path,
        )
        if final:
            weights = {
                "state_dict": self.model.state_dict(),
                "urbangeo": model_metadata(self.cfg, self.image_norm),
            }
            atomic_save(weights, self.model_path)

    # ---- the loop

    def run(self, max_steps: int | None = None) -> TrainResult:
        """Train to the end (or to ``max_steps``), validating after epochs; returns the result."""
        cfg, info = self.cfg, self.info
        stopped = False
        with _maybe_progress(info.is_main, self.total_steps, self.step) as bar:
            while self.epoch < cfg.epochs and not self.finished:
                batches = self._epoch_batches()
                while self.position < self.n_batches:
                    self._train_step(batches, bar)
                    if max_steps is not None and self.step >= max_steps:
                        self.save(final=False)
                        stopped = True
                        break
                    if self.step % cfg.checkpoint_every == 0:
                        self.save(final=False)
                if stopped:
                    break
                self._end_epoch()
            if not stopped and not self.finished:
                self.finished = True
                self.save(final=True)
        if info.enabled:
            dist.barrier()
        if self.failed and info.is_main:
            warnings.warn(
                f"{len(self.failed)} training image(s) could not be decoded and were skipped.",
                UrbangeoWarning,
                stacklevel=3,
            )
        return self._result()

    def _epoch_batches(self) -> Iterator[dict[str, Tensor]]:
        cfg = self.cfg
        self.train_set.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch)
        self.sampler.set_start(self.position * cfg.batch_size)
        loader = DataLoader(
            self.train_set,
            batch_size=cfg.batch_size,
            sampler=self.sampler,
            num_workers=cfg.num_workers,
            collate_fn=collate_images,
            pin_memory=self.device.type == "cuda",
            # Its own generator: creating the iterator leaves the global RNG untouched.
            generator=torch.Generator().manual_seed(cfg.seed + self.epoch),
        )
        self.module.train()
        return iter(loader)

    def _forward_loss(self, images: Tensor, tokens: Tensor) -> tuple[Tensor, dict, Any]:
        """Student (and teacher) features and the loss; returns (loss, parts, teacher feats)."""
        with autocast(self.device, self.amp_dtype):
            img_s, txt_s, scale = self.module(images, tokens)
            if self.teacher is None:
                assert self.clip_loss is not None
                loss = self.clip_loss(
                    img_s.float(), txt_s.float(), scale.clamp(max=MAX_LOGIT_SCALE)
                )
                return loss, {"loss_c": loss.detach()}, None
            with torch.no_grad():
                img_t = self.teacher.module.encode_image(images, normalize=True)
                txt_t = encode_text(self.teacher.module, tokens, normalize=True)
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
            batch = next(batches)
            self.failed.update(batch["failed"].tolist())
            sizes = _all_sizes(batch["index"].numel(), info, self.device)
            if min(sizes) == 0:  # every image of some rank's batch failed to decode
                continue
            # The plain contrastive loss gathers features with gradient: equal sizes needed.
            n = min(sizes) if self.clip_loss is not None else batch["index"].numel()
            images = batch["images"][:n].to(self.device, non_blocking=True)
            tokens = self.train_tokens[batch["index"][:n]].to(self.device, torch.long)
            sync = micro == window - 1 or not info.enabled
            with nullcontext() if sync else self.module.no_sync():
                loss, parts, teacher_feats = self._forward_loss(images, tokens)
                self.scaler.scale(loss / window).backward()
            synced = synced or (sync and info.enabled)
            if teacher_feats is not None and self.img_queue is not None:
                img_t, txt_t = teacher_feats  # enqueued after the loss that used the old queue
                self.img_queue.enqueue(concat_all_gather(img_t.float()))
                self.txt_queue.enqueue(concat_all_gather(txt_t.float()))
            losses.append(float(loss.detach()))
            for key, value in parts.items():
                parts_sum[key] = parts_sum.get(key, 0.0) + float(value)
            images_seen += n
        self.position += window
        if info.enabled and not synced:
            _allreduce_grads(self.trainable, info.world_size)
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.trainable, cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))
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
        logged = torch.tensor(
            [
                sum(losses) / count if losses else nan,
                parts_sum.get("loss_c", nan) / count,
                parts_sum.get("loss_d", nan) / count,
                float(images_seen),
            ],
            device=self.device,
        )
        logged = _mean_across(logged, self.info).tolist()
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
                "logit_scale": float(self.model.logit_scale.detach().exp()),
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
            self.val_tokens,
            batch_size=self.cfg.batch_size,
            device=self.device,
            dtype=self.amp_dtype,
            num_workers=self.cfg.num_workers,
        )
        if len(kept) < 2:
            return {}
        return retrieval_metrics(img, txt, self.val_groups[kept.numpy()])

    def _end_epoch(self) -> None:
        cfg, info, acc = self.cfg, self.info, self.epoch_acc
        if (self.epoch + 1) % cfg.val_every == 0 or self.epoch + 1 == cfg.epochs:
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
                "logit_scale": float(self.model.logit_scale.detach().exp()),
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
                f"epoch {self.epoch + 1}/{cfg.epochs}: loss {acc['loss'] / windows:.4f}, "
                f"val R@1 image->text {v['i2t_r1']:.3f} text->image {v['t2i_r1']:.3f} "
                f"(chance {v['chance_r1']:.3f}, {int(v['val_pairs'])} pairs)"
            )
        self.epoch += 1
        self.position = 0
        self.epoch_acc = _new_epoch_acc()

    def _result(self) -> TrainResult:
        main = self.info.is_main
        counts = {
            "pairs": self.n_pairs,
            "pairs_train": len(self.train_pairs),
            "pairs_val": len(self.val_pairs),
            "missing_images": self.n_missing,
            "failed_images": len(self.failed),
            "truncated_captions": self.n_truncated,
            "steps": self.step,
            "trainable_params": self.n_trainable,
            "params": self.n_params,
        }
        return TrainResult(
            model=self.model,
            teacher=self.teacher,
            img_queue=self.img_queue,
            txt_queue=self.txt_queue,
            config=self.cfg,
            step=self.step,
            total_steps=self.total_steps,
            finished=self.finished,
            checkpoint=self.last_path if main else None,
            model_path=self.model_path if self.finished and main else None,
            metrics_path=self.metrics.path if main else None,
            validation=self.validation,
            counts=counts,
        )


def _new_epoch_acc() -> dict[str, Any]:
    return {"loss": 0.0, "windows": 0, "images": 0, "seconds": 0.0}


__all__ = [
    "MODES",
    "TRAIN_CHOICES",
    "ContrastiveModule",
    "DistInfo",
    "ModeSpec",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "apply_freezing",
    "encode_pairs",
    "encode_text",
    "retrieval_metrics",
    "train",
    "warmup_cosine",
]
