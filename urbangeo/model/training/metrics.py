"""Held-out image↔text retrieval: the features of pairs, and recall@1/5 in both directions."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from urbangeo.model.data import ImageDataset, TokenTable, autocast, collate_images
from urbangeo.model.protocols import ClipModel
from urbangeo.model.training.contrastive import encode_text


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
    tokens: Tensor | TokenTable,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    num_workers: int = 0,
    check: Callable[[], None] | None = None,
    worker_init_fn: Callable[[int], None] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Normalised image and text features of a pair dataset, and the indices decoded.

    ``check`` is called before each batch (it may raise to stop, e.g. on Ctrl-C).
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_images,
        worker_init_fn=worker_init_fn,
    )
    imgs, txts, kept = [], [], []
    clip = cast(ClipModel, model)
    try:
        for batch in loader:
            if check is not None:
                check()
            if batch["index"].numel() == 0:
                continue
            with autocast(device, dtype):
                imgs.append(clip.encode_image(batch["images"].to(device), normalize=True).float())
                tok = tokens[batch["index"]].to(device, torch.long)
                txts.append(encode_text(model, tok, normalize=True).float())
            kept.append(batch["index"])
    finally:
        model.train(was_training)
    if not kept:
        empty = torch.empty(0)
        return empty, empty, torch.empty(0, dtype=torch.long)
    return torch.cat(imgs).cpu(), torch.cat(txts).cpu(), torch.cat(kept)
