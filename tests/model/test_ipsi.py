"""IPSI (Long-CLIP's positional-embedding stretch) against literal transcriptions of its code."""

from __future__ import annotations

import pytest
import torch

from urbangeo.model.clip import stretch_positional_embedding


def longclip_load_from_clip(positional_embedding_pre: torch.Tensor) -> torch.Tensor:
    """Line-by-line transcription of Long-CLIP's ``load_from_clip`` stretch (keep 20, ratio 4)."""
    length, dim = positional_embedding_pre.shape
    keep_len = 20
    new = torch.zeros([4 * length - 3 * keep_len, dim], dtype=positional_embedding_pre.dtype)
    pre = positional_embedding_pre
    for i in range(keep_len):
        new[i] = pre[i]
    for i in range(length - 1 - keep_len):
        new[4 * i + keep_len] = pre[i + keep_len]
        new[4 * i + 1 + keep_len] = 3 * pre[i + keep_len] / 4 + 1 * pre[i + 1 + keep_len] / 4
        new[4 * i + 2 + keep_len] = 2 * pre[i + keep_len] / 4 + 2 * pre[i + 1 + keep_len] / 4
        new[4 * i + 3 + keep_len] = 1 * pre[i + keep_len] / 4 + 3 * pre[i + 1 + keep_len] / 4
    new[4 * length - 3 * keep_len - 4] = (
        pre[length - 1] + 0 * (pre[length - 1] - pre[length - 2]) / 4
    )
    new[4 * length - 3 * keep_len - 3] = (
        pre[length - 1] + 1 * (pre[length - 1] - pre[length - 2]) / 4
    )
    new[4 * length - 3 * keep_len - 2] = (
        pre[length - 1] + 2 * (pre[length - 1] - pre[length - 2]) / 4
    )
    new[4 * length - 3 * keep_len - 1] = (
        pre[length - 1] + 3 * (pre[length - 1] - pre[length - 2]) / 4
    )
    return new


def generic_loop(old: torch.Tensor, keep: int, ratio: int) -> torch.Tensor:
    """The same rule for any keep / ratio, written as explicit loops."""
    length, dim = old.shape
    new = torch.zeros(keep + ratio * (length - keep), dim, dtype=old.dtype)
    for j in range(keep):
        new[j] = old[j]
    for i in range(length - keep - 1):
        for k in range(ratio):
            new[keep + ratio * i + k] = (
                (ratio - k) * old[keep + i] + k * old[keep + i + 1]
            ) / ratio
    for k in range(ratio):
        extrapolated = 2 * old[length - 1] - old[length - 2]
        new[keep + ratio * (length - keep - 1) + k] = (
            (ratio - k) * old[length - 1] + k * extrapolated
        ) / ratio
    return new


def test_77_to_248_matches_longclip_code() -> None:
    old = torch.randn(77, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    new = stretch_positional_embedding(old)
    assert new.shape == (248, 32)
    assert new.dtype == torch.float64
    torch.testing.assert_close(new, longclip_load_from_clip(old), rtol=0, atol=1e-12)
    # the first 20 rows are copied bit for bit, and every 4th stretched row is an old row
    assert torch.equal(new[:20], old[:20])
    assert torch.equal(new[20:244:4], old[20:76])


def test_float32_input_matches_and_keeps_dtype() -> None:
    old = torch.randn(77, 16, generator=torch.Generator().manual_seed(1))
    new = stretch_positional_embedding(old, keep=20, ratio=4)
    assert new.dtype == torch.float32
    torch.testing.assert_close(new, longclip_load_from_clip(old), rtol=1e-6, atol=1e-6)
    half = stretch_positional_embedding(old.half())
    assert half.dtype == torch.float16 and half.shape == (248, 16)


@pytest.mark.parametrize(
    ("length", "keep", "ratio"), [(9, 2, 3), (6, 0, 2), (5, 4, 5), (12, 3, 1), (2, 0, 7)]
)
def test_small_random_cases_match_loop(length: int, keep: int, ratio: int) -> None:
    old = torch.randn(length, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    before = old.clone()
    new = stretch_positional_embedding(old, keep=keep, ratio=ratio)
    assert new.shape == (keep + ratio * (length - keep), 3)
    torch.testing.assert_close(new, generic_loop(old, keep, ratio), rtol=0, atol=1e-12)
    assert torch.equal(old, before)  # input untouched


def test_ratio_one_is_identity() -> None:
    old = torch.randn(10, 4, dtype=torch.float64)
    assert torch.equal(stretch_positional_embedding(old, keep=3, ratio=1), old)


def test_result_is_detached_copy() -> None:
    old = torch.nn.Parameter(torch.randn(77, 8))
    new = stretch_positional_embedding(old)
    assert not new.requires_grad
    new[0] += 1
    assert not torch.equal(new[0], old[0].detach())


@pytest.mark.parametrize(
    ("pe", "kwargs", "match"),
    [
        (torch.zeros(77), {}, "2-D"),
        (torch.zeros(2, 3, 4), {}, "2-D"),
        (torch.zeros(1, 8), {"keep": 0}, "at least 2"),
        (torch.zeros(77, 8), {"keep": -1}, "keep"),
        (torch.zeros(77, 8), {"keep": 77}, "keep"),
        (torch.zeros(77, 8), {"keep": 2.0}, "keep"),
        (torch.zeros(77, 8), {"ratio": 0}, "ratio"),
        (torch.zeros(77, 8), {"ratio": 2.5}, "ratio"),
        (torch.zeros(77, 8), {"ratio": True}, "ratio"),
        ([[0.0, 1.0]], {}, "2-D"),
    ],
)
def test_argument_errors(pe: object, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        stretch_positional_embedding(pe, **kwargs)  # type: ignore[arg-type]
