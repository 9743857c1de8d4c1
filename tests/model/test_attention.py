"""The fast transformer forward against open_clip's own: same features and same gradients."""

from __future__ import annotations

import pytest
import torch

from urbangeo.model.attention import (
    causal_mask_of,
    is_causal_mask,
    supports_fast_forward,
    transformer_forward,
)
from urbangeo.model.clip import create_model
from urbangeo.model.training import encode_text

TINY = "urbangeo-tiny-vit"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_causal_mask_is_recognised() -> None:
    causal = torch.full((5, 5), float("-inf")).triu(1)
    assert is_causal_mask(causal)
    assert not is_causal_mask(causal.T)
    assert not is_causal_mask(torch.zeros(5, 5))
    assert not is_causal_mask(None)
    padded = causal.clone()
    padded[3, 1] = float("-inf")
    assert not is_causal_mask(padded)


@pytest.mark.parametrize("tower", ["text", "image"])
def test_same_outputs_and_gradients_as_open_clip(tower: str) -> None:
    torch.manual_seed(0)
    model = create_model(TINY).model.train()
    transformer = model.transformer if tower == "text" else model.visual.transformer
    assert supports_fast_forward(transformer)
    length = 40 if tower == "text" else 17
    mask = model.attn_mask[:length, :length] if tower == "text" else None
    x = torch.randn(3, length, 64, requires_grad=True)

    def grads(fn):
        model.zero_grad(set_to_none=True)
        out = fn(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        params = {n: p.grad.clone() for n, p in transformer.named_parameters()}
        return out.detach(), params, x.grad.clone()

    want, want_params, want_x = grads(lambda v: transformer(v, attn_mask=mask))
    x.grad = None
    got, got_params, got_x = grads(lambda v: transformer_forward(transformer, v, mask))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_x, want_x, rtol=1e-4, atol=1e-5)
    for name, grad in want_params.items():
        torch.testing.assert_close(got_params[name], grad, rtol=1e-4, atol=1e-5)


def test_other_blocks_and_masks_take_open_clips_path() -> None:
    model = create_model(TINY).model
    transformer = model.transformer
    x = torch.randn(2, 6, 64)
    other = torch.zeros(6, 6)
    other[0, 5] = float("-inf")  # not causal: open_clip's forward with this mask
    torch.testing.assert_close(
        transformer_forward(transformer, x, other), transformer(x, attn_mask=other)
    )
    transformer.grad_checkpointing = True
    assert not supports_fast_forward(transformer)
    transformer.grad_checkpointing = False
    model.transformer.resblocks[0].attn.batch_first = False
    assert not supports_fast_forward(transformer)


def test_trimmed_fast_text_features_equal_open_clips_full_context() -> None:
    torch.manual_seed(1)
    bundle = create_model(TINY)
    model = bundle.model.eval()
    tokens = bundle.tokenizer(["a red square", "a long street " * 30, "x"])
    with torch.no_grad():
        torch.testing.assert_close(
            encode_text(model, tokens), model.encode_text(tokens, normalize=True),
            rtol=1e-5, atol=1e-5,
        )  # fmt: skip


def test_the_causal_check_is_remembered_until_the_mask_changes() -> None:
    model = create_model(TINY).model
    assert causal_mask_of(model)
    assert causal_mask_of(model)  # from the cache
    model.attn_mask.fill_(0.0)  # in place: a new version of the tensor
    assert not causal_mask_of(model)
    model.attn_mask = None
    assert not causal_mask_of(model)


def test_hooked_blocks_take_open_clips_path() -> None:
    model = create_model(TINY).model
    seen = []
    handle = model.transformer.resblocks[1].mlp.register_forward_hook(lambda *a: seen.append(1))
    assert not supports_fast_forward(model.transformer)
    tokens = torch.randint(1, 1000, (2, 9))
    tokens[:, -1] = 49407
    encode_text(model, tokens)
    assert seen == [1]  # the hook ran
    handle.remove()
    assert supports_fast_forward(model.transformer)


def test_a_bidirectional_text_tower_is_not_trimmed() -> None:
    torch.manual_seed(2)
    bundle = create_model(TINY, context_length=77)
    model = bundle.model.eval()
    model.attn_mask = None  # every token sees every other: the padding matters
    tokens = bundle.tokenizer(["a red square", "x"])
    with torch.no_grad():
        torch.testing.assert_close(encode_text(model, tokens), model.encode_text(tokens, True))
