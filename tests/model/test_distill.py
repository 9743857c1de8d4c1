"""Momentum self-distillation: loss vs. a direct transcription of the paper, EMA, queues, gather."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from open_clip import ClipLoss

from urbangeo.model.distill import (
    EMATeacher,
    FeatureQueue,
    concat_all_gather,
    ema_update,
    momentum_distillation_loss,
)

N, D = 4, 8


def _features(n: int, seed: int, d: int = D) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def paper_loss(v_s, t_s, v_t, t_t, q_v, q_t, scale: float, mu: float) -> tuple[float, float, float]:
    """Eqs. (2)-(6) of the UrbanLN paper with explicit loops in float64 Python numbers."""

    def cos(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(a.double() @ b.double() / (a.double().norm() * b.double().norm()))

    def softmax(xs: list[float]) -> list[float]:
        top = max(xs)
        exps = [math.exp(x - top) for x in xs]
        return [e / sum(exps) for e in exps]

    def kl(q: list[float], p: list[float]) -> float:
        return sum(qj * math.log(qj / pj) for qj, pj in zip(q, p, strict=True) if qj > 0)

    text_targets = list(t_t) + list(q_t)  # teacher features of the batch, then the queue
    image_targets = list(v_t) + list(q_v)
    n = len(v_s)
    l_c = l_d = 0.0
    for i in range(n):
        p_i2t = softmax([scale * cos(v_s[i], t) for t in text_targets])
        p_t2i = softmax([scale * cos(t_s[i], v) for v in image_targets])
        q_i2t = softmax([scale * cos(v_t[i], t) for t in text_targets])
        q_t2i = softmax([scale * cos(t_t[i], v) for v in image_targets])
        l_c += -(math.log(p_i2t[i]) + math.log(p_t2i[i]))
        l_d += kl(q_i2t, p_i2t) + kl(q_t2i, p_t2i)
    l_c /= 2 * n
    l_d /= 2 * n
    return (1 - mu) * l_c + mu * l_d, l_c, l_d


@pytest.mark.parametrize("mu", [0.0, 0.3, 0.5, 1.0])
def test_loss_matches_paper_equations(mu: float) -> None:
    # unnormalised inputs: the loss must normalise (cosine similarities)
    v_s, t_s = 3 * _features(N, 0), 0.5 * _features(N, 1)
    v_t, t_t = _features(N, 2), 2 * _features(N, 3)
    q_v, q_t = _features(6, 4), _features(5, 5)
    loss, parts = momentum_distillation_loss(v_s, t_s, v_t, t_t, q_v, q_t, 1 / 0.07, mu=mu)
    expected, l_c, l_d = paper_loss(v_s, t_s, v_t, t_t, q_v, q_t, 1 / 0.07, mu)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert parts["loss_c"].item() == pytest.approx(l_c, rel=1e-5)
    assert parts["loss_d"].item() == pytest.approx(l_d, rel=1e-5)
    assert parts["loss_c"].item() == pytest.approx(
        (parts["loss_c_i2t"] + parts["loss_c_t2i"]).item() / 2, rel=1e-6
    )


def test_feature_queue_and_tensor_queue_agree() -> None:
    v_s, t_s, v_t, t_t = (_features(N, s) for s in range(4))
    q_img, q_txt = FeatureQueue(D, size=16), FeatureQueue(D, size=16)
    q_img.enqueue(_features(6, 10))
    q_txt.enqueue(_features(3, 11))
    a, _ = momentum_distillation_loss(v_s, t_s, v_t, t_t, q_img, q_txt, 20.0)
    b, _ = momentum_distillation_loss(v_s, t_s, v_t, t_t, _features(6, 10), _features(3, 11), 20.0)
    expected, _, _ = paper_loss(v_s, t_s, v_t, t_t, _features(6, 10), _features(3, 11), 20.0, 0.5)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    assert a.item() == pytest.approx(expected, rel=1e-5)


def test_unfilled_queue_contributes_no_zero_vectors() -> None:
    v_s, t_s, v_t, t_t = (_features(N, s) for s in range(4))
    queue = FeatureQueue(D, size=10)
    queue.enqueue(_features(3, 7))
    assert len(queue) == 3 and queue.features.shape == (3, D)
    with_queue, _ = momentum_distillation_loss(v_s, t_s, v_t, t_t, queue, queue, 10.0)
    expected, _, _ = paper_loss(v_s, t_s, v_t, t_t, _features(3, 7), _features(3, 7), 10.0, 0.5)
    assert with_queue.item() == pytest.approx(expected, rel=1e-5)
    # the raw buffer (3 features + 7 zero rows) would give another value
    padded, _ = momentum_distillation_loss(v_s, t_s, v_t, t_t, queue.buffer, queue.buffer, 10.0)
    assert padded.item() != pytest.approx(with_queue.item(), rel=1e-4)
    # an empty queue is the same as no queue
    empty = FeatureQueue(D, size=10)
    a, _ = momentum_distillation_loss(v_s, t_s, v_t, t_t, empty, empty, 10.0)
    b, _ = momentum_distillation_loss(v_s, t_s, v_t, t_t, None, None, 10.0)
    assert a.item() == b.item()


def test_mu_zero_empty_queue_same_features_is_clip_loss() -> None:
    img, txt = _features(6, 20, d=16), _features(6, 21, d=16)
    scale = torch.tensor(1 / 0.07)
    loss, parts = momentum_distillation_loss(
        img, txt, img, txt, FeatureQueue(16, 32), None, scale, mu=0.0
    )
    expected = ClipLoss()(img, txt, scale)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # teacher == student and no queue: the teacher's targets are the student's own softmax
    assert parts["loss_d"].item() == pytest.approx(0.0, abs=1e-6)


def test_logit_scale_is_clamped_and_positive() -> None:
    v_s, t_s, v_t, t_t = (_features(N, s) for s in range(4))
    clamped, parts = momentum_distillation_loss(v_s, t_s, v_t, t_t, None, None, 150.0)
    at_max, _ = momentum_distillation_loss(v_s, t_s, v_t, t_t, None, None, 100.0)
    assert parts["logit_scale"].item() == 100.0
    assert clamped.item() == pytest.approx(at_max.item(), rel=1e-7)
    with pytest.raises(ValueError, match="logit_scale"):
        momentum_distillation_loss(v_s, t_s, v_t, t_t, None, None, 0.0)


def test_gradients_reach_student_and_temperature_only() -> None:
    v_s = _features(N, 0).requires_grad_()
    t_s = _features(N, 1).requires_grad_()
    v_t = _features(N, 2).requires_grad_()
    t_t = _features(N, 3).requires_grad_()
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    loss, _ = momentum_distillation_loss(
        v_s, t_s, v_t, t_t, _features(5, 4), _features(5, 5), log_scale.exp()
    )
    loss.backward()
    assert v_s.grad is not None and v_s.grad.abs().sum() > 0
    assert t_s.grad is not None and t_s.grad.abs().sum() > 0
    assert log_scale.grad is not None and log_scale.grad != 0
    assert v_t.grad is None and t_t.grad is None


def test_kl_has_the_gradient_of_albef_cross_entropy() -> None:
    # ALBEF writes L_D as -sum q log p; KL(q || p) differs by the teacher entropy only.
    v_s = _features(N, 0).requires_grad_()
    t_s, v_t, t_t = _features(N, 1), _features(N, 2), _features(N, 3)
    q_v, q_t = _features(7, 4), _features(7, 5)
    loss, _ = momentum_distillation_loss(v_s, t_s, v_t, t_t, q_v, q_t, 12.0, mu=1.0)
    (grad_kl,) = torch.autograd.grad(loss, v_s)
    targets = torch.cat([t_t, q_t])
    with torch.no_grad():
        q = F.softmax(12.0 * v_t @ targets.T, dim=1)
    ce = -(q * F.log_softmax(12.0 * F.normalize(v_s, dim=-1) @ targets.T, dim=1)).sum(1).mean()
    (grad_ce,) = torch.autograd.grad(ce / 2, v_s)  # the i2t half of L_D
    torch.testing.assert_close(grad_kl, grad_ce, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((_features(N, 0), _features(N, 1), _features(N, 2), _features(3, 3)), {}, r"\[N, D\]"),
        ((_features(N, 0),) * 4, {"mu": 1.5}, "mu"),
        ((_features(0, 0),) * 4, {}, "N > 0"),
    ],
)
def test_loss_argument_errors(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        momentum_distillation_loss(*args, None, None, 10.0, **kwargs)


def test_queue_of_wrong_width_is_rejected() -> None:
    with pytest.raises(ValueError, match="txt_queue"):
        momentum_distillation_loss(*(_features(N, 0),) * 4, None, torch.zeros(3, 5), 10.0)


# ------------------------------------------------------------------------------------------
# EMA teacher
# ------------------------------------------------------------------------------------------


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.norm = torch.nn.BatchNorm1d(2)


def test_ema_update_numerically() -> None:
    torch.manual_seed(0)
    student = _Net()
    teacher = EMATeacher(student, momentum=0.9)
    assert all(not p.requires_grad for p in teacher.parameters())
    old_teacher = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
        student.norm.running_mean.fill_(3.0)
    teacher.update(student)
    for name, p in student.named_parameters():
        expected = 0.9 * old_teacher[name] + 0.1 * p.detach()
        torch.testing.assert_close(teacher.module.get_parameter(name), expected)
    assert torch.equal(teacher.module.norm.running_mean, torch.full((2,), 3.0))  # buffers copied
    # the student's parameters are untouched and keep their gradients
    assert all(p.requires_grad for p in student.parameters())


def test_ema_momentum_extremes_and_errors() -> None:
    student, other = _Net(), _Net()
    teacher = _Net()
    ema_update(teacher, student, momentum=0.0)
    assert torch.equal(teacher.lin.weight, student.lin.weight)
    before = teacher.lin.weight.clone()
    ema_update(teacher, other, momentum=1.0)
    assert torch.equal(teacher.lin.weight, before)
    with pytest.raises(ValueError, match="momentum"):
        ema_update(teacher, student, momentum=1.5)
    with pytest.raises(ValueError, match="different parameters"):
        ema_update(teacher, torch.nn.Linear(3, 2))
    with pytest.raises(ValueError, match="teacher"):
        ema_update(torch.nn.Linear(3, 2), torch.nn.Linear(3, 4))


def test_teacher_stays_in_eval_mode_and_gives_no_grad() -> None:
    student = _Net()
    holder = torch.nn.ModuleDict({"student": student, "teacher": EMATeacher(student)})
    holder.train()
    assert student.training and not holder["teacher"].module.training
    assert "teacher.module.lin.weight" in holder.state_dict()
    linear = torch.nn.Linear(3, 2)
    out = EMATeacher(linear)(torch.randn(2, 3))
    assert not out.requires_grad


# ------------------------------------------------------------------------------------------
# Queue
# ------------------------------------------------------------------------------------------


def test_queue_wraps_around_in_order() -> None:
    queue = FeatureQueue(D, size=10)
    batches = [_features(5, 30), _features(7, 31), _features(9, 32)]
    seen: list[torch.Tensor] = []
    for batch, expected_len in zip(batches, [5, 10, 10], strict=True):
        queue.enqueue(batch)
        seen.extend(batch)
        assert len(queue) == expected_len
        torch.testing.assert_close(queue.features, torch.stack(seen[-10:]))
    assert queue.is_full and int(queue.ptr) == (5 + 7 + 9) % 10
    # after 21 rows in a 10-row ring the oldest kept row is the last of batch 2
    torch.testing.assert_close(queue.features[0], batches[1][-1])


def test_queue_batch_larger_than_queue_and_normalisation() -> None:
    queue = FeatureQueue(D, size=10)
    queue.enqueue(_features(4, 40))
    big = 5 * torch.randn(13, D)
    queue.enqueue(big)
    torch.testing.assert_close(queue.features, F.normalize(big[-10:], dim=-1))
    queue.enqueue(torch.zeros(0, D))  # no-op
    assert len(queue) == 10
    with pytest.raises(ValueError, match=r"\[n, 8\]"):
        queue.enqueue(torch.zeros(3, 4))
    queue.reset()
    assert len(queue) == 0 and queue.features.shape == (0, D)


def test_queue_state_dict_round_trip() -> None:
    queue = FeatureQueue(D, size=10)
    queue.enqueue(_features(7, 50))
    queue.enqueue(_features(6, 51))
    copy = FeatureQueue(D, size=10)
    copy.load_state_dict(queue.state_dict())
    torch.testing.assert_close(copy.features, queue.features)
    queue.enqueue(_features(2, 52))
    copy.enqueue(_features(2, 52))
    torch.testing.assert_close(copy.features, queue.features)


# ------------------------------------------------------------------------------------------
# DDP helper
# ------------------------------------------------------------------------------------------


def test_concat_all_gather_identity_without_distributed() -> None:
    x = torch.randn(3, 4)
    assert concat_all_gather(x) is x


def test_concat_all_gather_two_ranks_uneven(tmp_path: Path) -> None:
    worker = Path(__file__).with_name("ddp_gather_worker.py")
    done = subprocess.run(
        [sys.executable, str(worker), str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    expected = torch.cat([torch.full((3, 4), 0.0), torch.full((5, 4), 1.0)])
    for res in results:
        assert torch.equal(res["gathered"], expected)
        assert res["ema_ok"]
    # every rank's queue holds the features of both ranks, identically
    torch.testing.assert_close(results[0]["queue"], results[1]["queue"])
    assert results[0]["queue"].shape == (8, 4)
