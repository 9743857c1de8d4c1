"""open_clip models with a long text context (IPSI, Long-CLIP's positional-embedding stretch).

UrbanLN keeps the first 20 text positions of a CLIP model and stretches the remaining 57 four
times (77 -> 248 tokens), exactly as Long-CLIP's ``load_from_clip`` does. :func:`create_model`
builds any open_clip architecture (pretrained tag, local checkpoint or random init), applies the
stretch and returns the model with image transforms and a tokenizer at the new context length.
With ``context_length`` equal to the model's native length (77) nothing is stretched: the
UrbanCLIP baseline.
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import open_clip
import open_clip.factory
import torch
from torch import Tensor, nn

from urbangeo.errors import InputError, UrbangeoError
from urbangeo.model.protocols import ClipModel, ClipTextPositions
from urbangeo.model.tensor_files import load_tensors

DEFAULT_MODEL = "ViT-B-16"
LONG_CONTEXT_LENGTH = 248
IPSI_KEEP = 20

# Tiny architectures for CPU work and tests (random init only; no weights exist for them).
# The text vocabulary and context stay CLIP's (49408, 77) so that the BPE tokenizer and IPSI
# behave exactly as with a real model.
_TINY_TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2}
TINY_MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "urbangeo-tiny-vit": {
        "embed_dim": 64,
        "vision_cfg": {
            "image_size": 64,
            "layers": 2,
            "width": 64,
            "head_width": 32,
            "mlp_ratio": 2.0,
            "patch_size": 16,
        },
        "text_cfg": {**_TINY_TEXT_CFG, "layers": 2, "mlp_ratio": 2.0},
    },
    "urbangeo-tiny-vit-96": {
        "embed_dim": 64,
        "vision_cfg": {
            "image_size": 96,
            "layers": 4,
            "width": 128,
            "head_width": 32,
            "patch_size": 16,
        },
        "text_cfg": {**_TINY_TEXT_CFG, "layers": 4},
    },
}


class ModelConfigError(InputError, ValueError):
    """An unknown architecture or pretrained tag, or a context length IPSI cannot produce."""


class PretrainedWeightsError(UrbangeoError, RuntimeError):
    """Pretrained weights could not be obtained (typically: no internet) or loaded."""


# --------------------------------------------------------------------------------------------
# Registry of tiny configurations
# --------------------------------------------------------------------------------------------


def register_model_config(name: str, config: dict[str, Any], *, overwrite: bool = False) -> None:
    """Register an open_clip architecture ``config`` under ``name`` (kept if already there).

    ``config`` has open_clip's model-config layout (``embed_dim``, ``vision_cfg``, ``text_cfg``).
    Afterwards ``name`` works with ``open_clip.list_models``, ``open_clip.create_model``,
    ``open_clip.get_tokenizer`` and :func:`create_model`.
    """
    missing = {"embed_dim", "vision_cfg", "text_cfg"} - set(config)
    if missing:
        raise ValueError(f"model config {name!r} lacks {sorted(missing)}")
    registry = getattr(open_clip.factory, "_MODEL_CONFIGS", None)
    if isinstance(registry, dict):
        # open_clip's public add_model_config only reads JSON files, which a wheel of this
        # package does not ship. It fills this dict, and its rescans rebuild the dict from the
        # current entries, so names added here survive later add_model_config calls.
        if overwrite or name not in registry:
            registry[name] = copy.deepcopy(config)
    elif overwrite or name not in open_clip.list_models():  # pragma: no cover - other open_clip
        folder = Path(tempfile.mkdtemp(prefix="urbangeo-open-clip-config-"))
        (folder / f"{name}.json").write_text(json.dumps(config))
        open_clip.add_model_config(folder)


def register_tiny_models() -> list[str]:
    """Register :data:`TINY_MODEL_CONFIGS` with open_clip (idempotent); returns their names."""
    for name, config in TINY_MODEL_CONFIGS.items():
        register_model_config(name, config)
    return list(TINY_MODEL_CONFIGS)


register_tiny_models()


# --------------------------------------------------------------------------------------------
# IPSI
# --------------------------------------------------------------------------------------------


def stretch_positional_embedding(pe: Tensor, *, keep: int = IPSI_KEEP, ratio: int = 4) -> Tensor:
    """Stretch a ``[L, D]`` positional embedding to ``keep + ratio * (L - keep)`` rows (IPSI).

    Long-CLIP's ``load_from_clip``, generalised from 4 to ``ratio``:

    - ``new[j] = old[j]`` for ``j < keep``;
    - ``new[keep + ratio*i + k] = ((ratio-k) * old[keep+i] + k * old[keep+i+1]) / ratio`` for
      ``i = 0 .. L-keep-2`` and ``k = 0 .. ratio-1``;
    - the last ``ratio`` rows extrapolate past the end:
      ``new[keep + ratio*(L-keep-1) + k] = old[L-1] + k * (old[L-1] - old[L-2]) / ratio``.

    For L = 77, keep = 20, ratio = 4 this gives 248 rows. The result is computed in float32 (or
    float64 for float64 input) and returned in the input's dtype and device.
    """
    if not isinstance(pe, Tensor) or pe.ndim != 2:
        raise ValueError(
            f"pe must be a 2-D tensor [positions, width]; got {getattr(pe, 'shape', type(pe))}"
        )
    length = pe.shape[0]
    if length < 2:
        raise ValueError(f"pe needs at least 2 positions to interpolate; got {length}")
    if isinstance(keep, bool) or not isinstance(keep, int) or not 0 <= keep <= length - 1:
        raise ValueError(f"keep must be an integer in [0, {length - 1}]; got {keep!r}")
    if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
        raise ValueError(f"ratio must be a positive integer; got {ratio!r}")

    work_dtype = torch.float64 if pe.dtype == torch.float64 else torch.float32
    old = pe.detach().to(work_dtype)
    tail = old[keep:]  # the L - keep rows that get stretched
    k = torch.arange(ratio, dtype=work_dtype, device=pe.device).view(1, ratio, 1) / ratio
    # Rows keep+ratio*i+k for i < L-keep-1: linear blend between consecutive old rows.
    left, right = tail[:-1].unsqueeze(1), tail[1:].unsqueeze(1)
    inner = left + k * (right - left)
    # The last block blends old[L-1] towards the extrapolated 2*old[L-1] - old[L-2].
    last, before = old[-1], old[-2]
    outer = last + k[0] * (last - before)
    new = torch.cat([old[:keep], inner.reshape(-1, old.shape[1]), outer], dim=0)
    return new.to(pe.dtype)


def _ipsi_ratio(context_length: int, native: int, keep: int) -> int:
    """The integer stretch factor that maps ``native`` positions to ``context_length``."""
    if isinstance(context_length, bool) or not isinstance(context_length, int):
        raise ModelConfigError(f"context_length must be an integer; got {context_length!r}")
    if isinstance(keep, bool) or not isinstance(keep, int) or not 0 <= keep < native:
        raise ModelConfigError(
            f"ipsi_keep must be an integer in [0, {native - 1}] for a model with {native} text "
            f"positions; got {keep!r}"
        )
    valid = ", ".join(str(keep + r * (native - keep)) for r in range(1, 6))
    if context_length < native:
        raise ModelConfigError(
            f"context_length {context_length} is shorter than the model's native {native} "
            "text positions; IPSI only stretches.",
            hint=f"Use one of {valid} (ipsi_keep={keep}).",
        )
    ratio, rest = divmod(context_length - keep, native - keep)
    if rest:
        raise ModelConfigError(
            f"context_length {context_length} is not reachable by IPSI from {native} positions "
            f"keeping {keep}: (context_length - keep) / (native - keep) = "
            f"{context_length - keep}/{native - keep} is not an integer.",
            hint=f"Use one of {valid} (ipsi_keep={keep}).",
        )
    return ratio


def _text_tower(model: nn.Module) -> nn.Module:
    """The module that owns the text ``positional_embedding`` and ``attn_mask``."""
    if isinstance(getattr(model, "positional_embedding", None), nn.Parameter) and hasattr(
        model, "attn_mask"
    ):
        return model  # open_clip.CLIP keeps the text tower's pieces on the model itself
    text = getattr(model, "text", None)
    if (
        text is not None
        and isinstance(getattr(text, "positional_embedding", None), nn.Parameter)
        and hasattr(text, "attn_mask")
        and getattr(text, "cls_emb", None) is None
    ):
        return text  # CustomTextCLIP with open_clip's own TextTransformer
    raise ModelConfigError(
        f"Cannot stretch the text context of a {type(model).__name__}: IPSI needs open_clip's "
        "own text transformer (CLIP or CustomTextCLIP without a class token); Hugging Face text "
        "towers and CoCa are not supported.",
        hint="Use context_length equal to the model's native length, or a CLIP architecture.",
    )


def extend_context_length(model: nn.Module, context_length: int, *, keep: int = IPSI_KEEP) -> int:
    """Stretch ``model``'s text positions in place to ``context_length`` with IPSI.

    The positional embedding is replaced by :func:`stretch_positional_embedding`, the causal
    attention mask is rebuilt at the new size and ``context_length`` attributes follow. Returns
    the stretch ratio (1 when ``context_length`` already is the model's length: no change).
    """
    tower = cast(ClipTextPositions, _text_tower(model))
    native = int(tower.positional_embedding.shape[0])
    if context_length == native:
        return 1
    ratio = _ipsi_ratio(context_length, native, keep)
    old = tower.positional_embedding
    new = stretch_positional_embedding(old.data, keep=keep, ratio=ratio)
    tower.positional_embedding = nn.Parameter(new, requires_grad=old.requires_grad)
    if tower.attn_mask is not None:
        mask = torch.full(
            (context_length, context_length),
            float("-inf"),
            dtype=tower.attn_mask.dtype,
            device=tower.attn_mask.device,
        ).triu_(1)
        tower.attn_mask = mask  # stays a non-persistent buffer
    tower.context_length = context_length
    if hasattr(tower, "num_pos"):
        tower.num_pos = context_length
    cast(ClipModel, model).context_length = context_length
    return ratio


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


class LongTokenizer:
    """Tokenise captions at a fixed context length, keeping end-of-text last when truncating.

    Wraps an open_clip tokenizer. open_clip's ``SimpleTokenizer`` already ends a truncated
    sequence with EOT; this wrapper enforces it for any tokenizer exposing ``eot_token_id``,
    because CLIP's text tower pools at the arg-max token id, which must be EOT.
    """

    def __init__(self, base: Callable[..., Tensor], context_length: int) -> None:
        self.base = base
        self.context_length = int(context_length)
        self.sot_token_id: int | None = getattr(base, "sot_token_id", None)
        self.eot_token_id: int | None = getattr(base, "eot_token_id", None)

    @classmethod
    def for_model(cls, name: str, context_length: int) -> LongTokenizer:
        """The tokenizer open_clip uses for architecture ``name``, at ``context_length``."""
        register_tiny_models()
        return cls(open_clip.get_tokenizer(name, context_length=context_length), context_length)

    def __call__(self, texts: str | Sequence[str]) -> Tensor:
        """Token ids ``[len(texts), context_length]`` (a single string gives one row)."""
        if isinstance(texts, str):
            texts = [texts]
        tokens = self.base(list(texts), context_length=self.context_length)
        if self.eot_token_id is not None and tokens.numel():
            full = tokens[:, -1] != 0  # 0 is the padding id of CLIP's BPE tokenizer
            tokens[full, -1] = self.eot_token_id
        return tokens

    def count_tokens(self, text: str) -> int:
        """Untruncated length of ``text`` in tokens, start and end tokens included."""
        encode = getattr(self.base, "encode", None)
        if encode is None:
            raise NotImplementedError(f"{type(self.base).__name__} has no encode()")
        return len(encode(text)) + 2


# --------------------------------------------------------------------------------------------
# Model factory
# --------------------------------------------------------------------------------------------


@dataclass
class ClipBundle:
    """What :func:`create_model` returns; unpacks as ``model, preprocess, tokenizer``.

    ``preprocess`` is open_clip's evaluation transform, ``preprocess_train`` its training one.
    ``ipsi_ratio`` is 1 when the text context was not stretched (UrbanCLIP mode).
    """

    model: nn.Module
    preprocess: Callable[[Any], Tensor]
    preprocess_train: Callable[[Any], Tensor]
    tokenizer: LongTokenizer
    name: str
    native_context_length: int
    context_length: int
    ipsi_keep: int
    ipsi_ratio: int

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.preprocess, self.tokenizer))


#: Model names that bring their own (pretrained) weights.
_SCHEMAS = ("hf-hub:", "local-dir:")


def brings_own_weights(name: str) -> bool:
    """Whether the architecture ``name`` loads its weights itself (``hf-hub:``, ``local-dir:``)."""
    return name.startswith(_SCHEMAS)


def _check_architecture(name: str) -> None:
    if brings_own_weights(name):
        return
    available = open_clip.list_models()
    if name.replace("/", "-") in available:
        return
    close = difflib.get_close_matches(name, available, n=5, cutoff=0.5)
    shown = close or [*TINY_MODEL_CONFIGS, "ViT-B-16", "ViT-B-32", "ViT-L-14"]
    raise ModelConfigError(
        f"Unknown model architecture {name!r}.",
        hint=f"Try one of: {', '.join(shown)} ({len(available)} available; see "
        "open_clip.list_models()).",
    )


def _check_pretrained(name: str, pretrained: str) -> dict[str, Any]:
    tags = open_clip.list_pretrained_tags_by_model(name.replace("/", "-"))
    cfg = open_clip.get_pretrained_cfg(name.replace("/", "-"), pretrained)
    if not cfg:
        listed = ", ".join(tags) if tags else "none (random init only)"
        raise ModelConfigError(
            f"Unknown pretrained tag {pretrained!r} for architecture {name!r}.",
            hint=f"Known tags: {listed}. For weights in a local file use --checkpoint FILE "
            "(Python: checkpoint=PATH).",
        )
    return cfg


def _checkpoint_text_positions(path: Path) -> int | None:
    try:
        state = open_clip.factory.load_state_dict(str(path))
    except Exception as exc:
        raise InputError(
            f"Cannot read the checkpoint {path} ({type(exc).__name__}: {exc}).",
            hint="Pass a model state dict saved with torch.save (e.g. checkpoints/NAME/model.pt "
            "written by `urbangeo train`).",
        ) from exc
    if not isinstance(state, dict) or not any(isinstance(v, Tensor) for v in state.values()):
        raise InputError(
            f"{path} does not hold a model state dict.",
            hint="Pass a model state dict (raw or under 'state_dict'), e.g. "
            "checkpoints/NAME/model.pt written by `urbangeo train`.",
        )
    for key in ("positional_embedding", "text.positional_embedding"):
        if key in state:
            return int(state[key].shape[0])
    return None


def _load_checkpoint(model: nn.Module, path: Path, name: str) -> None:
    """``open_clip.load_checkpoint`` with a clear error for another architecture's weights."""
    try:
        open_clip.load_checkpoint(model, str(path))
    except RuntimeError as exc:
        detail = next(
            (line.strip() for line in str(exc).splitlines() if "size mismatch" in line),
            str(exc).splitlines()[0][:300],
        )
        raise ModelConfigError(
            f"Checkpoint {path} does not fit architecture {name!r} ({detail}).",
            hint="Pass the architecture the checkpoint was trained with (--model); checkpoints "
            "written by `urbangeo train` record it.",
        ) from exc


def checkpoint_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``urbangeo`` record (architecture, context length) of a trained checkpoint, or {}."""
    state = load_tensors(  # memory-mapped: only the small record is read from a large file
        path,
        what="the checkpoint",
        hint="Pass checkpoints/NAME/model.pt written by `urbangeo train`.",
        mmap=True,
    )
    meta = state.get("urbangeo") if isinstance(state, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def recorded_image_norm(
    meta: dict[str, Any],
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The (mean, std) a checkpoint's ``urbangeo`` record says its model was trained with, or
    None (the architecture's own normalisation)."""
    if "image_mean" not in meta:
        return None
    return tuple(meta["image_mean"]), tuple(meta["image_std"])


def create_model(
    name: str = DEFAULT_MODEL,
    *,
    pretrained: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    context_length: int = LONG_CONTEXT_LENGTH,
    ipsi_keep: int = IPSI_KEEP,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    checkpoint_norm: bool = True,
) -> ClipBundle:
    """Build an open_clip model with its text context stretched to ``context_length`` by IPSI.

    Weights come from ``pretrained`` (an open_clip tag such as ``"openai"``; needs internet or a
    warm ``cache_dir``), from ``checkpoint`` (a local state-dict file, raw or under
    ``"state_dict"``, at the native context length or already at ``context_length``), or are
    random when neither is given. The stretch ratio is
    ``(context_length - ipsi_keep) / (native - ipsi_keep)`` and must be an integer; with
    ``context_length`` equal to the native length (77) the model is left unchanged.
    ``image_mean``/``image_std`` replace the architecture's image normalisation (see
    :func:`with_image_normalization`); otherwise, with ``checkpoint_norm``, a checkpoint written
    by ``urbangeo train`` brings the statistics it was trained with, if it recorded any.
    """
    register_tiny_models()
    if not isinstance(name, str) or not name:
        raise ModelConfigError(f"name must be an architecture name; got {name!r}")
    _check_architecture(name)
    if pretrained is not None and checkpoint is not None:
        raise ModelConfigError("Give either pretrained (a tag) or checkpoint (a file), not both.")
    if pretrained is not None and brings_own_weights(name):
        raise ModelConfigError(
            f"pretrained tags apply to built-in architectures, not to {name!r} (its weights "
            "come with it)."
        )

    if checkpoint is not None and not Path(checkpoint).is_file():
        raise InputError(
            f"Checkpoint file not found: {checkpoint}",
            hint="Pass the path of a saved model state dict (.pt/.bin/.safetensors).",
        )

    schema = brings_own_weights(name)
    config = None if schema else open_clip.get_model_config(name.replace("/", "-"))
    if config is not None:  # fail before any download when the length is impossible
        native = int(config.get("text_cfg", {}).get("context_length", 77))
        if context_length != native:
            _ipsi_ratio(context_length, native, ipsi_keep)

    kwargs: dict[str, Any] = {"device": "cpu"}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    if pretrained is not None:
        tag_cfg = _check_pretrained(name, pretrained)
        if tag_cfg.get("quick_gelu", False):
            # e.g. ViT-B-16 + "openai": weights trained with QuickGELU; open_clip only warns.
            kwargs["force_quick_gelu"] = True
        try:
            model, preprocess_train, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, **kwargs
            )
        except Exception as exc:
            raise PretrainedWeightsError(
                f"Could not load pretrained weights {pretrained!r} for {name!r}: {exc}",
                hint="Downloads need internet. Offline, give a local weights file with "
                "--checkpoint FILE (embed: --weights FILE; Python: checkpoint=PATH), e.g. "
                "open_clip_pytorch_model.bin fetched elsewhere; or use a cache that already "
                "holds the weights (HF_HOME with HF_HUB_OFFLINE=1; Python: cache_dir=PATH); or "
                "leave out --pretrained for a random init.",
            ) from exc
    else:
        # A random init is what was asked for here: open_clip's warning about it is noise.
        with _quiet_random_init():
            model, preprocess_train, preprocess = open_clip.create_model_and_transforms(
                name, **kwargs
            )

    native = int(model.context_length)
    ratio = 1 if context_length == native else _ipsi_ratio(context_length, native, ipsi_keep)

    if checkpoint is not None:
        path = Path(checkpoint)
        rows = _checkpoint_text_positions(path)
        if rows is not None and rows not in (native, context_length):
            raise ModelConfigError(
                f"Checkpoint {path} has {rows} text positions; expected {native} (native, "
                f"stretched here) or {context_length} (already stretched).",
                hint="Pass the context_length the checkpoint was trained with.",
            )
        if rows == context_length:
            extend_context_length(model, context_length, keep=ipsi_keep)
            _load_checkpoint(model, path, name)
        else:
            _load_checkpoint(model, path, name)
            extend_context_length(model, context_length, keep=ipsi_keep)
    else:
        extend_context_length(model, context_length, keep=ipsi_keep)

    model.to(device)
    tokenizer = LongTokenizer.for_model(name, context_length)
    bundle = ClipBundle(
        model=model,
        preprocess=preprocess,
        preprocess_train=preprocess_train,
        tokenizer=tokenizer,
        name=name,
        native_context_length=native,
        context_length=context_length,
        ipsi_keep=ipsi_keep,
        ipsi_ratio=ratio,
    )
    if (image_mean is None) != (image_std is None):
        raise ModelConfigError("Give image_mean and image_std together.")
    if image_mean is not None and image_std is not None:
        return with_image_normalization(bundle, image_mean, image_std)
    if checkpoint is not None and checkpoint_norm:
        try:
            recorded = recorded_image_norm(checkpoint_metadata(checkpoint))
        except InputError:  # e.g. safetensors: no urbangeo record to read
            recorded = None
        if recorded is not None:
            return with_image_normalization(bundle, *recorded)
    return bundle


def _preprocess_cfg(model: nn.Module) -> dict[str, Any]:
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    return merge_preprocess_dict(PreprocessCfg(), getattr(model.visual, "preprocess_cfg", {}))


def with_image_normalization(
    bundle: ClipBundle, mean: Sequence[float], std: Sequence[float]
) -> ClipBundle:
    """``bundle`` with its image transforms normalising by ``mean``/``std`` (per channel).

    The model's ``visual.preprocess_cfg`` records the new values, as open_clip does for its own
    (in place: the model is shared with ``bundle``, whose transforms should not be used after).
    """
    from open_clip.transform import PreprocessCfg, image_transform_v2

    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ModelConfigError(
            f"image_mean and image_std need 3 values each, std > 0; got {mean}, {std}"
        )
    cfg = {**_preprocess_cfg(bundle.model), "mean": mean, "std": std}
    cast(ClipModel, bundle.model).visual.preprocess_cfg = cfg
    pp = PreprocessCfg(**cfg)
    return replace(
        bundle,
        preprocess=image_transform_v2(pp, is_train=False),
        preprocess_train=image_transform_v2(pp, is_train=True),
    )


def unnormalized_transform(model: nn.Module) -> Callable[[Any], Tensor]:
    """The model's evaluation transform without normalisation: pixels in [0, 1]."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = {**_preprocess_cfg(model), "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    return image_transform_v2(PreprocessCfg(**cfg), is_train=False)


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextmanager
def _quiet_random_init() -> Iterator[None]:
    root = logging.getLogger()
    drop = _DropRandomInitWarning()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
