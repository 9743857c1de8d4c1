"""A faster forward for open_clip's standard transformer blocks (same weights, same maths).

open_clip's ``ResidualAttentionBlock`` calls ``nn.MultiheadAttention`` with an explicit float
mask. On the CPU that path projects q, k and v with one small matrix product per sequence
position (a batched ``bmm`` over positions instead of one ``addmm``) and copies the result into
heads. :func:`transformer_forward` runs the same blocks with one projection and
``scaled_dot_product_attention`` (``is_causal=True`` for a causal tower, so that kernels that can
skip the masked half may): for the tiny model's text tower at 123 tokens the forward and
backward take about 10 % less time (benchmarks/RESULTS.md). Blocks of any other kind, blocks
with hooks, or a mask that is not the plain causal one, go through open_clip's own forward.
"""

from __future__ import annotations

from typing import cast

import open_clip.transformer as oct
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def is_causal_mask(mask: Tensor | None) -> bool:
    """Whether ``mask`` is the additive causal mask (-inf above the diagonal, 0 elsewhere)."""
    if mask is None or mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        return False
    above = torch.ones(mask.shape, dtype=torch.bool, device=mask.device).triu(1)
    return bool(torch.isneginf(mask[above]).all() and (mask[~above] == 0).all())


def causal_mask_of(module: nn.Module) -> bool:
    """``is_causal_mask(module.attn_mask)``, remembered until that tensor changes (the check
    reads the mask, which on a GPU means waiting for it)."""
    mask = getattr(module, "attn_mask", None)
    if not isinstance(mask, Tensor):
        return False
    key = (mask.data_ptr(), mask._version, tuple(mask.shape), str(mask.device))
    cached = getattr(module, "_urbangeo_causal", None)
    if cached is None or cached[0] != key:
        cached = (key, is_causal_mask(mask))
        # nn.Module.__setattr__ is typed for tensors and modules; it keeps any other value as
        # a plain attribute
        module._urbangeo_causal = cached  # type: ignore[assignment]
    return cached[1]


def _hooked(module: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def _plain_block(block: nn.Module) -> bool:
    attn = getattr(block, "attn", None)
    return (
        type(block) is oct.ResidualAttentionBlock
        and not hasattr(block, "ln_1_kv")
        and isinstance(attn, nn.MultiheadAttention)
        and attn.batch_first
        and attn._qkv_same_embed_dim
        and attn.bias_k is None
        and attn.bias_v is None
        and not attn.add_zero_attn
        and (attn.dropout == 0.0 or not attn.training)
        and not _hooked(block)  # hooks expect open_clip's own calls
    )


def supports_fast_forward(transformer: nn.Module) -> bool:
    """Whether :func:`transformer_forward` can run ``transformer`` (an open_clip Transformer)."""
    blocks = getattr(transformer, "resblocks", None)
    return (
        isinstance(blocks, nn.ModuleList)
        and getattr(transformer, "batch_first", False)
        and not getattr(transformer, "grad_checkpointing", False)
        and all(_plain_block(b) for b in blocks)
    )


def block_forward(block: oct.ResidualAttentionBlock, x: Tensor, *, causal: bool) -> Tensor:
    """One ``ResidualAttentionBlock`` on ``x`` (batch, length, width), causal or not."""
    attn: nn.MultiheadAttention = block.attn
    batch, length, width = x.shape
    heads = attn.num_heads
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    out = out.transpose(1, 2).reshape(batch, length, width)
    out = F.linear(out, attn.out_proj.weight, attn.out_proj.bias)
    x = x + block.ls_1(out)
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def transformer_forward(
    transformer: nn.Module, x: Tensor, attn_mask: Tensor | None, *, causal: bool | None = None
) -> Tensor:
    """``transformer(x, attn_mask=attn_mask)``, faster when the blocks and mask allow it.

    ``causal``: whether ``attn_mask`` is the causal mask, when the caller knows (else checked).
    """
    if not supports_fast_forward(transformer):
        return transformer(x, attn_mask=attn_mask)
    if causal is None:
        causal = is_causal_mask(attn_mask)
    if not (attn_mask is None or causal):
        return transformer(x, attn_mask=attn_mask)
    for block in cast(nn.ModuleList, transformer.resblocks):  # checked by supports_fast_forward
        x = block_forward(block, x, causal=causal)
    return x
