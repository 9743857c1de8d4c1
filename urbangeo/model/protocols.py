"""What urbangeo uses of an open_clip model beyond ``nn.Module``, for the type checker.

open_clip ships no type information, and ``nn.Module.__getattr__`` types every attribute it
does not know as ``Tensor | Module``; code that calls a CLIP model's own methods casts the
model (typed ``nn.Module``) to one of these protocols there. Nothing here runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from torch import Tensor, nn

if TYPE_CHECKING:
    import open_clip.transformer


class ClipVisual(Protocol):
    """An open_clip image tower (a module too): its feature length and preprocessing record."""

    output_dim: int
    preprocess_cfg: dict[str, Any]


class ClipModel(Protocol):
    """An open_clip ``CLIP`` or ``CustomTextCLIP``: both towers and the learnt temperature."""

    logit_scale: nn.Parameter
    visual: ClipVisual
    context_length: int

    def encode_image(self, image: Tensor, normalize: bool = False) -> Tensor: ...

    def encode_text(self, text: Tensor, normalize: bool = False) -> Tensor: ...


class ClipTextPositions(Protocol):
    """The module that owns a text tower's positions: a ``CLIP`` or a ``TextTransformer``."""

    positional_embedding: nn.Parameter
    attn_mask: Tensor | None
    context_length: int


class ClipTextTower(ClipModel, Protocol):
    """An open_clip ``CLIP``, whose text tower's pieces live on the model itself."""

    transformer: open_clip.transformer.Transformer
    token_embedding: nn.Embedding
    positional_embedding: nn.Parameter
    attn_mask: Tensor
    ln_final: nn.Module
    text_projection: nn.Parameter | nn.Linear | None
