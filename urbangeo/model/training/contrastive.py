"""The contrastive forward pass: both towers of a CLIP model, the text cut to its tokens.

Padding after end-of-text never influences CLIP's text features (causal attention, pooling at
end-of-text), so every batch is cut to its longest caption before the text tower
(:func:`encode_text`): same features, much less work for 248-token contexts.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from urbangeo.model.attention import causal_mask_of, transformer_forward
from urbangeo.model.protocols import ClipModel, ClipTextTower


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
        return cast(ClipModel, model).encode_text(tokens, normalize=normalize)
    clip = cast(ClipTextTower, model)  # checked by _trimmable
    length = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :length]
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens).to(cast_dtype)
    x = x + clip.positional_embedding[:length].to(cast_dtype)
    mask = clip.attn_mask[:length, :length]  # a prefix of a causal mask is causal
    x = transformer_forward(clip.transformer, x, mask, causal=True)
    x = clip.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    if clip.text_projection is not None:
        proj = clip.text_projection
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
        clip = cast(ClipModel, self.model)
        img = clip.encode_image(images, normalize=True)
        txt = encode_text(self.model, tokens, normalize=True)
        return img, txt, clip.logit_scale.exp()


def embed_dim(model: nn.Module) -> int:
    """The length of a CLIP model's (shared) image and text features."""
    proj = getattr(model, "text_projection", None)
    if isinstance(proj, nn.Parameter):
        return int(proj.shape[1])
    if isinstance(proj, nn.Linear):
        return int(proj.out_features)
    return int(cast(ClipModel, model).visual.output_dim)
