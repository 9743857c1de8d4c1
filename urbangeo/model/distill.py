"""Momentum self-distillation (ALBEF style) as used by UrbanLN against noisy captions.

A momentum teacher (EMA of the student, m = 0.995) encodes every batch; its normalised image and
text features fill two queues of the last K = 4096 features. The student is trained with

    L = (1 - mu) * L_C + mu * L_D,   mu = 0.5

over the targets "teacher features of the batch, then the queue" (N + K_t text targets for each
image, N + K_i image targets for each text), s = cosine similarity times ``logit_scale``
(= 1/temperature, clamped to ``max_logit_scale``):

- p_i2t(i, j) = softmax_j(s * <v_i, t^m_j>), p_t2i(i, j) = softmax_j(s * <t_i, v^m_j>);
- L_C = -1/(2N) * sum_i [log p_i2t(i, i) + log p_t2i(i, i)]  (the diagonal are the pairs);
- q_i2t, q_t2i: the same softmaxes from the teacher's features (v^m_i, t^m_i) instead of the
  student's, computed without gradient;
- L_D = 1/(2N) * sum_i [KL(q_i2t(i) || p_i2t(i)) + KL(q_t2i(i) || p_t2i(i))].

ALBEF writes the distillation term as the cross-entropy -sum q log p; it differs from the KL used
here (as in the UrbanLN paper) only by the teacher's entropy, a constant for the student, so the
gradients are identical. Typical step::

    with torch.no_grad():
        teacher.update(student)                       # EMA first, as ALBEF does
        img_t = teacher.encode_image(images); txt_t = teacher.encode_text(tokens)
    img_s = student.encode_image(images, normalize=True)
    txt_s = student.encode_text(tokens, normalize=True)
    loss, parts = momentum_distillation_loss(
        img_s, txt_s, img_t, txt_t, img_queue, txt_queue, student.logit_scale.exp())
    loss.backward(); ...
    img_queue.enqueue(concat_all_gather(img_t)); txt_queue.enqueue(concat_all_gather(txt_t))
"""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from urbangeo.model.defaults import DEFAULT_MOMENTUM, DEFAULT_MU, DEFAULT_QUEUE_SIZE
from urbangeo.model.protocols import ClipModel

MAX_LOGIT_SCALE = 100.0


def _unwrap(module: nn.Module) -> nn.Module:
    """The plain model inside DDP / DataParallel / torch.compile / EMATeacher wrappers."""
    while True:
        if isinstance(module, EMATeacher | nn.parallel.DistributedDataParallel | nn.DataParallel):
            module = module.module
        elif isinstance(orig := getattr(module, "_orig_mod", None), nn.Module):
            module = orig  # torch.compile's OptimizedModule
        else:
            return module


def _check_momentum(momentum: float) -> float:
    momentum = float(momentum)
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1]; got {momentum}")
    return momentum


@torch.no_grad()
def ema_update(
    teacher: nn.Module,
    student: nn.Module,
    momentum: float = DEFAULT_MOMENTUM,
    *,
    trainable_only: bool = False,
) -> None:
    """In place: ``teacher_param = m * teacher_param + (1 - m) * student_param``.

    Parameters are matched by name (wrappers such as DDP are looked through); buffers are copied
    from the student, since they are not learned. ``trainable_only`` skips the parameters the
    student does not train (``requires_grad`` False): they never change, and averaging them
    would only cost time and add rounding noise.
    """
    m = _check_momentum(momentum)
    t_model, s_model = _unwrap(teacher), _unwrap(student)
    t_params = dict(t_model.named_parameters())
    s_params = dict(s_model.named_parameters())
    if t_params.keys() != s_params.keys():
        diff = sorted(t_params.keys() ^ s_params.keys())[:5]
        raise ValueError(f"teacher and student have different parameters, e.g. {diff}")
    # Grouped by dtype/device for the foreach kernels: one launch per group on GPUs.
    groups: dict[tuple[torch.dtype, torch.device], tuple[list[Tensor], list[Tensor]]] = {}
    for name, t_param in t_params.items():
        s_param = s_params[name]
        if t_param.shape != s_param.shape:
            raise ValueError(
                f"parameter {name!r}: teacher {tuple(t_param.shape)} vs student "
                f"{tuple(s_param.shape)}"
            )
        if trainable_only and not s_param.requires_grad:
            continue
        targets, sources = groups.setdefault((t_param.dtype, t_param.device), ([], []))
        targets.append(t_param.data)
        sources.append(s_param.detach().to(t_param.dtype))
    for targets, sources in groups.values():
        torch._foreach_mul_(targets, m)
        torch._foreach_add_(targets, sources, alpha=1.0 - m)
    s_buffers = dict(s_model.named_buffers())
    for name, t_buf in t_model.named_buffers():
        s_buf = s_buffers.get(name)
        if s_buf is not None and s_buf.shape == t_buf.shape:
            t_buf.copy_(s_buf)


class EMATeacher(nn.Module):
    """A frozen copy of the student that follows it by exponential moving average.

    The teacher never receives gradients and always runs in eval mode (stable pseudo-targets).
    It is an ``nn.Module`` so that its weights go into checkpoints with ``state_dict()``.
    """

    def __init__(self, student: nn.Module, momentum: float = DEFAULT_MOMENTUM) -> None:
        super().__init__()
        self.momentum = _check_momentum(momentum)
        self.module = copy.deepcopy(_unwrap(student))
        self.module.requires_grad_(False)
        self.module.eval()

    def train(self, mode: bool = True) -> EMATeacher:
        """Keep the wrapped teacher in eval mode whatever the surrounding model's mode."""
        super().train(mode)
        self.module.eval()
        return self

    @torch.no_grad()
    def update(self, student: nn.Module, *, trainable_only: bool = False) -> None:
        """One EMA step towards ``student`` with this teacher's momentum (see ema_update)."""
        ema_update(self.module, student, self.momentum, trainable_only=trainable_only)

    @torch.no_grad()
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the teacher without gradient."""
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor:
        """Teacher image features, L2-normalised by default."""
        return cast(ClipModel, self.module).encode_image(images, normalize=normalize)

    @torch.no_grad()
    def encode_text(self, tokens: Tensor, normalize: bool = True) -> Tensor:
        """Teacher text features, L2-normalised by default."""
        return cast(ClipModel, self.module).encode_text(tokens, normalize=normalize)


class FeatureQueue(nn.Module):
    """Ring buffer of the last ``size`` L2-normalised feature vectors (saved with state_dict).

    ``enqueue`` accepts any batch size (a batch larger than ``size`` keeps its last ``size``
    rows); ``features`` returns only the filled rows, oldest first, so that a queue that is not
    yet full never puts zero vectors into a softmax.
    """

    buffer: Tensor
    ptr: Tensor
    filled: Tensor

    def __init__(
        self, dim: int, size: int = DEFAULT_QUEUE_SIZE, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        if int(dim) < 1 or int(size) < 1:
            raise ValueError(f"dim and size must be positive; got dim={dim}, size={size}")
        self.dim, self.size = int(dim), int(size)
        self.register_buffer("buffer", torch.zeros(self.size, self.dim, dtype=dtype))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return int(self.filled)

    @property
    def is_full(self) -> bool:
        """Whether ``size`` features have been enqueued."""
        return int(self.filled) == self.size

    @torch.no_grad()
    def enqueue(self, features: Tensor) -> None:
        """Append ``features`` ``[n, dim]`` (normalised here, detached), dropping the oldest."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"expected features [n, {self.dim}]; got {tuple(features.shape)}")
        n = features.shape[0]
        if n == 0:
            return
        feats = F.normalize(features.detach().to(self.buffer), dim=-1)
        if n >= self.size:
            self.buffer.copy_(feats[-self.size :])
            self.ptr.zero_()
            self.filled.fill_(self.size)
            return
        start = int(self.ptr)
        index = (start + torch.arange(n, device=self.buffer.device)) % self.size
        self.buffer[index] = feats
        self.ptr.fill_((start + n) % self.size)
        self.filled.fill_(min(int(self.filled) + n, self.size))

    @property
    def features(self) -> Tensor:
        """The filled rows ``[len(self), dim]``, oldest first (a copy)."""
        if not self.is_full:
            return self.buffer[: int(self.filled)].clone()
        start = int(self.ptr)
        return torch.cat([self.buffer[start:], self.buffer[:start]])

    @torch.no_grad()
    def reset(self) -> None:
        """Empty the queue."""
        self.buffer.zero_()
        self.ptr.zero_()
        self.filled.zero_()


@torch.no_grad()
def concat_all_gather(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0 (rank order), without gradient.

    Ranks may hold different batch sizes. Identity when torch.distributed is not initialised
    or the world has one process.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    world = dist.get_world_size()
    tensor = tensor.contiguous()
    size = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    # all_gather needs equal shapes: pad to the largest batch, then trim.
    padded = tensor.new_zeros((max(counts), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:c] for g, c in zip(gathered, counts, strict=True)])


def _queue_features(queue: FeatureQueue | Tensor | None, like: Tensor, name: str) -> Tensor:
    if queue is None:
        return like.new_zeros((0, like.shape[1]))
    feats = queue.features if isinstance(queue, FeatureQueue) else queue
    if feats.ndim != 2 or feats.shape[1] != like.shape[1]:
        raise ValueError(f"{name} must be [K, {like.shape[1]}]; got {tuple(feats.shape)}")
    return F.normalize(feats.detach().to(like), dim=-1)


def momentum_distillation_loss(
    img_s: Tensor,
    txt_s: Tensor,
    img_t: Tensor,
    txt_t: Tensor,
    img_queue: FeatureQueue | Tensor | None,
    txt_queue: FeatureQueue | Tensor | None,
    logit_scale: Tensor | float,
    *,
    mu: float = DEFAULT_MU,
    max_logit_scale: float = MAX_LOGIT_SCALE,
) -> tuple[Tensor, dict[str, Tensor]]:
    """UrbanLN's loss ``(1 - mu) * L_C + mu * L_D`` (formulas in the module docstring).

    ``img_s, txt_s``: student features ``[N, D]``; ``img_t, txt_t``: teacher features of the
    same pairs; queues: :class:`FeatureQueue`, a ``[K, D]`` tensor or None (empty). All features
    are L2-normalised here. ``logit_scale`` is the multiplier 1/temperature (open_clip's
    ``model.logit_scale.exp()``), clamped to ``max_logit_scale``; gradients flow to it through
    the student logits only. Returns the loss and detached parts: ``loss_c``, ``loss_d``, their
    ``_i2t``/``_t2i`` halves and the ``logit_scale`` used. With ``mu = 0``, empty queues and
    teacher features equal to the student's this is open_clip's ``ClipLoss``.
    """
    if not 0.0 <= float(mu) <= 1.0:
        raise ValueError(f"mu must be in [0, 1]; got {mu}")
    shapes = {t.shape for t in (img_s, txt_s, img_t, txt_t)}
    if len(shapes) != 1 or img_s.ndim != 2 or img_s.shape[0] == 0:
        raise ValueError(
            "img_s, txt_s, img_t and txt_t must all be [N, D] with N > 0; got "
            f"{[tuple(t.shape) for t in (img_s, txt_s, img_t, txt_t)]}"
        )
    # Softmaxes over thousands of targets are computed in float32 even under autocast.
    v = F.normalize(img_s.float(), dim=-1)
    t = F.normalize(txt_s.float(), dim=-1)
    v_m = F.normalize(img_t.detach().float(), dim=-1)
    t_m = F.normalize(txt_t.detach().float(), dim=-1)
    img_all = torch.cat([v_m, _queue_features(img_queue, v_m, "img_queue")])
    txt_all = torch.cat([t_m, _queue_features(txt_queue, t_m, "txt_queue")])

    scale = torch.as_tensor(logit_scale, dtype=torch.float32, device=v.device)
    if bool((scale <= 0).any()):
        raise ValueError(f"logit_scale must be positive (it is 1/temperature); got {logit_scale}")
    scale = scale.clamp(max=max_logit_scale)

    logits_i2t = scale * v @ txt_all.T  # [N, N + K_t]
    logits_t2i = scale * t @ img_all.T  # [N, N + K_i]
    labels = torch.arange(v.shape[0], device=v.device)
    loss_c_i2t = F.cross_entropy(logits_i2t, labels)
    loss_c_t2i = F.cross_entropy(logits_t2i, labels)
    loss_c = (loss_c_i2t + loss_c_t2i) / 2

    with torch.no_grad():
        s = scale.detach()
        q_i2t = F.softmax(s * v_m @ txt_all.T, dim=1)
        q_t2i = F.softmax(s * t_m @ img_all.T, dim=1)
    # kl_div(log p, q, "batchmean") = (1/N) sum_i sum_j q_ij (log q_ij - log p_ij)
    loss_d_i2t = F.kl_div(F.log_softmax(logits_i2t, dim=1), q_i2t, reduction="batchmean")
    loss_d_t2i = F.kl_div(F.log_softmax(logits_t2i, dim=1), q_t2i, reduction="batchmean")
    loss_d = (loss_d_i2t + loss_d_t2i) / 2

    loss = (1.0 - mu) * loss_c + mu * loss_d
    parts = {
        "loss_c": loss_c.detach(),
        "loss_d": loss_d.detach(),
        "loss_c_i2t": loss_c_i2t.detach(),
        "loss_c_t2i": loss_c_t2i.detach(),
        "loss_d_i2t": loss_d_i2t.detach(),
        "loss_d_t2i": loss_d_t2i.detach(),
        "logit_scale": scale.detach(),
    }
    return loss, parts
