"""The settings of a training run (:class:`TrainConfig`), its modes and its file names.

Modes (the paper's model and its ablations / baseline, :data:`MODES`):

============  =======  ============================================  ====
mode          tokens   loss                                           mu
============  =======  ============================================  ====
urbanln       248      teacher + queues, (1-mu) L_C + mu L_D          0.5
no-ipsi       77       same as urbanln, native text context           0.5
no-distill    248      plain CLIP contrastive loss (no teacher)       —
urbanclip     77       plain CLIP contrastive loss (no teacher)       —
============  =======  ============================================  ====

Freezing (``train=``, :data:`TRAIN_CHOICES`): the paper reports far fewer trainable parameters
than UrbanCLIP and UrbanVLP ("minimal fine-tuning" of pretrained CLIP, AdamW at lr 1e-7) but
does not say which parameters it freezes. ``both`` (default) trains everything, as Long-CLIP
does; ``image`` / ``text`` train one tower (the other frozen; ``logit_scale`` always trains);
``last-n`` trains the last ``train_last_n`` transformer blocks of each tower, their final norms
and projections, the (IPSI-stretched) text positional embedding and ``logit_scale``. Region
embeddings come from the image tower, so ``text`` alone never changes them.

This module imports no torch: settings can be declared, offered and checked without it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from urbangeo.errors import InputError
from urbangeo.model.defaults import (
    DEFAULT_MOMENTUM,
    DEFAULT_QUEUE_SIZE,
    PRECISIONS,
)
from urbangeo.settings.model import IMAGE_NORMS, MODES, TRAIN_CHOICES
from urbangeo.settings.model import ModeSpec as ModeSpec

#: Per-step and per-epoch metrics of every run, beside the run's GeoPackage.
METRICS_CSV = "train_metrics.csv"
#: The full training state (``checkpoints/<name>/last.pt``), to resume from.
LAST_CHECKPOINT = "last.pt"
#: The final weights (``checkpoints/<name>/model.pt``), loadable by ``create_model``.
MODEL_FILE = "model.pt"
#: The ``format`` entry of a ``last.pt``.
CHECKPOINT_FORMAT = "urbangeo-train-state"
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
