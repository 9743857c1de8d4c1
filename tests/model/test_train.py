"""The trainer on a tiny CLIP and synthetic pairs: learning, exact resume, modes, freezing,
schedules, retrieval metrics, bad input, and two gloo processes under torchrun."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.model.synthetic import make_run
from urbangeo import constants as C
from urbangeo.errors import InputError, OutputError, UrbangeoWarning
from urbangeo.io.runs import read_stage_records
from urbangeo.model.clip import ModelConfigError, create_model
from urbangeo.model.data import resolve_precision
from urbangeo.model.distill import EMATeacher
from urbangeo.model.stages import train_stage
from urbangeo.model.training import (
    METRICS_CSV,
    MetricsLog,
    apply_freezing,
    encode_text,
    retrieval_metrics,
    train,
    warmup_cosine,
)

TINY = "urbangeo-tiny-vit"
FAST = {"model": TINY, "lr": 1e-3, "weight_decay": 0.0, "warmup_steps": 1}


pytestmark = pytest.mark.usefixtures("one_thread", "quiet_progress")


def _states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- pieces checked against independent computations -------------------------------------


def test_warmup_cosine_schedule() -> None:
    total, warmup = 20, 4
    for step in range(total + 1):
        if step < warmup:
            expected = (step + 1) / warmup
        else:
            expected = 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        assert warmup_cosine(step, warmup=warmup, total=total) == pytest.approx(expected)
    assert warmup_cosine(total, warmup=0, total=total, min_ratio=0.1) == pytest.approx(0.1)


def test_retrieval_metrics_against_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    img, txt = torch.randn(9, 5, generator=gen), torch.randn(9, 5, generator=gen)
    txt[:3] = img[:3] + 0.01 * txt[:3]  # the first three pairs match well
    groups = np.array([0, 1, 2, 3, 4, 5, 6, 6, 7])  # pairs 6 and 7 share a caption

    def recall(query: torch.Tensor, keys: torch.Tensor, k: int) -> float:
        hits = 0
        for i in range(len(query)):
            sims = [float(torch.cosine_similarity(query[i], keys[j], dim=0)) for j in range(9)]
            order = sorted(range(9), key=lambda j: -sims[j])
            best_true = min(order.index(j) for j in range(9) if groups[j] == groups[i])
            # rank = how many non-matching keys score above the best matching one
            rank = sum(1 for j in order[:best_true] if groups[j] != groups[i])
            hits += rank < k
        return hits / len(query)

    out = retrieval_metrics(img, txt, groups)
    for k in (1, 5):
        assert out[f"i2t_r{k}"] == pytest.approx(recall(img, txt, k))
        assert out[f"t2i_r{k}"] == pytest.approx(recall(txt, img, k))
    assert out["chance_r1"] == pytest.approx((7 * 1 + 2 * 2) / 9 / 9)
    assert out["i2t_r1"] >= 3 / 9


def test_trimmed_text_encoding_equals_the_full_context() -> None:
    torch.manual_seed(0)
    bundle = create_model(TINY)
    model, tokenizer = bundle.model.eval(), bundle.tokenizer
    tokens = tokenizer(["a red square", "a long street " * 30, "x"])
    with torch.no_grad():
        full = model.encode_text(tokens, normalize=True)
        trimmed = encode_text(model, tokens, normalize=True)
    torch.testing.assert_close(trimmed, full, rtol=1e-5, atol=1e-5)


def test_freezing_choices() -> None:
    model = create_model(TINY).model

    def trainable(choice: str, n: int = 1) -> set[str]:
        apply_freezing(model, choice, n)
        return {name for name, p in model.named_parameters() if p.requires_grad}

    names = {name for name, _ in model.named_parameters()}
    assert trainable("both") == names
    image = trainable("image")
    assert image == {n for n in names if n.startswith("visual.")} | {"logit_scale"}
    text = trainable("text")
    assert text == names - {n for n in names if n.startswith("visual.")}
    last = trainable("last-n", 1)
    assert "visual.transformer.resblocks.1.mlp.c_fc.weight" in last
    assert "transformer.resblocks.1.attn.in_proj_weight" in last
    assert {"visual.proj", "text_projection", "positional_embedding", "logit_scale"} <= last
    assert not any(".resblocks.0." in n for n in last)
    assert "visual.conv1.weight" not in last and "token_embedding.weight" not in last
    trained, total = apply_freezing(model, "last-n", 1)
    assert trained == sum(p.numel() for n, p in model.named_parameters() if n in last)
    assert 0 < trained < total


def test_mixed_precision_needs_cuda() -> None:
    cpu = torch.device("cpu")
    with pytest.warns(UrbangeoWarning, match="needs a CUDA GPU"):
        assert resolve_precision("bf16", cpu) is None
    assert resolve_precision("auto", cpu) is None
    assert resolve_precision("fp16", torch.device("cuda")) is torch.float16


# ---- training -------------------------------------------------------------------------------


def test_tiny_model_learns_held_out_retrieval(tmp_path: Path) -> None:
    """A few epochs on 36 synthetic pairs: held-out R@1 well above chance (< ~15 s)."""
    gpkg = make_run(tmp_path / "run", n=48)
    result = train_stage(
        gpkg,
        **{**FAST, "lr": 2e-3, "warmup_steps": 5},
        epochs=12,
        batch_size=12,
        queue_size=64,
        val_fraction=0.25,
    )
    counts = result.counts
    assert counts["pairs_train"] == 36 and counts["pairs_val"] == 12
    assert counts["chance_r1"] == pytest.approx(1 / 12, abs=1e-3)
    r1 = (counts["i2t_r1"] + counts["t2i_r1"]) / 2
    assert r1 >= 3 * counts["chance_r1"], counts

    metrics = pd.read_csv(gpkg.parent / METRICS_CSV)
    steps, epochs = metrics[metrics["kind"] == "step"], metrics[metrics["kind"] == "epoch"]
    assert len(steps) == 36 and len(epochs) == 12
    assert steps["loss"].notna().all() and (steps["images_per_s"] > 0).all()
    assert epochs["i2t_r1"].notna().all() and (epochs["val_pairs"] == 12).all()
    # the logged learning rates follow warm-up + cosine
    expected = [2e-3 * warmup_cosine(s, warmup=5, total=36) for s in steps["step"]]
    np.testing.assert_allclose(steps["lr"], expected, rtol=1e-4)

    record = read_stage_records(gpkg)["train"]
    assert record.params["mode"] == "urbanln" and record.params["context_length"] == 248
    assert record.counts["i2t_r1"] == pytest.approx(counts["i2t_r1"], abs=1e-4)
    weights = Path(record.params["model_path"])
    assert weights == gpkg.parent / C.CHECKPOINTS_DIR / "urbanln" / "model.pt"
    loaded = create_model(TINY, checkpoint=weights).model
    assert loaded.positional_embedding.shape[0] == 248


def test_resume_is_bit_identical(small_run: Path, tmp_path: Path) -> None:
    settings = dict(
        FAST,
        epochs=2,
        batch_size=5,
        accum_steps=2,
        queue_size=16,
        val_fraction=0.2,
        augment=True,
        checkpoint_every=1000,
    )
    whole = train(small_run, run_dir=tmp_path / "a", **settings)
    assert whole.finished and whole.step == whole.total_steps == 4

    part = train(small_run, run_dir=tmp_path / "b", stop_after=3, **settings)
    assert not part.finished and part.step == 3 and part.model_path is None
    with pytest.raises(OutputError, match="already exists"):
        train(small_run, run_dir=tmp_path / "b", **settings)
    with pytest.raises(InputError, match="lr"):
        train(small_run, run_dir=tmp_path / "b", resume=True, **{**settings, "lr": 5e-4})
    rest = train(small_run, run_dir=tmp_path / "b", resume=True, **settings)
    assert rest.finished and rest.step == 4

    assert _states_equal(whole.model.state_dict(), rest.model.state_dict())
    assert _states_equal(whole.teacher.state_dict(), rest.teacher.state_dict())
    assert torch.equal(whole.img_queue.features, rest.img_queue.features)
    assert torch.equal(whole.txt_queue.features, rest.txt_queue.features)
    a = pd.read_csv(tmp_path / "a" / METRICS_CSV)
    b = pd.read_csv(tmp_path / "b" / METRICS_CSV)
    cols = ["kind", "epoch", "step", "lr", "loss", "i2t_r1"]
    pd.testing.assert_frame_equal(a[cols], b[cols])

    again = train(small_run, run_dir=tmp_path / "b", resume=True, **settings)
    assert again.finished and again.step == 4  # nothing left to do


@pytest.mark.parametrize(
    ("mode", "positions", "teacher"),
    [("urbanclip", 77, False), ("no-ipsi", 77, True), ("no-distill", 248, False)],
)
def test_baseline_modes(
    small_run: Path, tmp_path: Path, mode: str, positions: int, teacher: bool
) -> None:
    result = train(small_run, run_dir=tmp_path, mode=mode, epochs=1, batch_size=8, **FAST)
    assert result.model.positional_embedding.shape[0] == positions
    assert (result.teacher is not None) is teacher
    assert result.config.mu == (0.5 if teacher else 0.0)
    assert (tmp_path / C.CHECKPOINTS_DIR / mode / "model.pt").is_file()
    losses = pd.read_csv(tmp_path / METRICS_CSV)["loss"]
    assert np.isfinite(losses).all()


def test_frozen_tower_does_not_move(small_run: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)  # the trainer seeds the same way before building the model
    initial = create_model(TINY).model.state_dict()
    result = train(
        small_run, run_dir=tmp_path, train="image", epochs=1, batch_size=8, queue_size=8, **FAST
    )
    final = result.model.state_dict()
    for name, value in final.items():
        moved = not torch.equal(value, initial[name])
        assert moved == (name.startswith("visual.") or name == "logit_scale"), name


def test_bad_settings_fail_before_any_work(small_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="Unknown model architecture") as err:
        train(tmp_path / "nothing.gpkg", model="ViT-B-17")
    assert "ViT-B-16" in err.value.hint
    with pytest.raises(InputError, match="does not apply"):
        train(small_run, model=TINY, mode="urbanclip", mu=0.5)
    with pytest.raises(InputError, match=r"mode .* not one of the choices"):
        train(small_run, model=TINY, mode="clip")
    with pytest.raises(InputError, match="batch_size"):
        train(small_run, model=TINY, batch_size=0)
    with pytest.raises(InputError, match="No image–caption pairs"):
        train(small_run, model=TINY, kind="overhead", run_dir=tmp_path)

    other = create_model("urbangeo-tiny-vit-96", context_length=77).model
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(ModelConfigError, match="does not fit architecture") as err:
        train(small_run, model=TINY, checkpoint=str(tmp_path / "other.pt"), run_dir=tmp_path)
    assert "--model" in err.value.hint


def test_long_captions_and_broken_images_do_not_stop_training(
    small_run: Path, tmp_path: Path
) -> None:
    folder = small_run.parent
    paths = sorted((folder / "images" / "streetview").glob("*.png"))[:12]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    long_caption = "a very long description of a busy street " * 40  # ~330 tokens
    captions = [f"picture number {i}" for i in range(12)]
    captions[2] = captions[5] = long_caption
    pairs = pd.DataFrame({"path": [str(p) for p in paths[:11]] + [str(broken)]})
    pairs["caption"] = captions
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    with pytest.warns(UrbangeoWarning) as caught:
        result = train(tmp_path / "pairs.csv", epochs=1, batch_size=4, val_fraction=0.0, **FAST)
    texts = [str(w.message) for w in caught]
    assert any("2 of the 11 captions used (of 12) are longer than 248" in t for t in texts), texts
    assert any("1 training image(s) could not be decoded" in t for t in texts), texts
    assert result.finished and result.counts["failed_images"] == 1
    assert result.counts["truncated_captions"] == 2


def test_two_processes_with_ddp(tmp_path: Path) -> None:
    """torchrun, 2 gloo processes on CPU: identical weights on both ranks, loss decreases."""
    gpkg = make_run(tmp_path / "run", n=24)
    out = tmp_path / "out"
    worker = Path(__file__).with_name("ddp_train_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2]), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", str(worker), str(gpkg), str(out), "urbanln"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    rank0, rank1 = (torch.load(out / f"rank{r}.pt") for r in (0, 1))
    assert _states_equal(rank0["model"], rank1["model"])
    assert _states_equal(rank0["teacher"], rank1["teacher"])
    assert torch.equal(rank0["queue"], rank1["queue"])  # filled from both ranks
    # 19 training pairs: 10 per rank (DistributedSampler pads), 3 batches of 4 per epoch
    assert rank0["pairs_train"] == 19 and rank0["step"] == rank0["total_steps"] == 18
    metrics = pd.read_csv(out / METRICS_CSV)
    steps = metrics[metrics["kind"] == "step"]
    assert (steps["images"] <= 8).all() and steps["images"].sum() == 6 * 20
    # the queue (8) is full after the first step; compare epochs once it is
    epochs = metrics[metrics["kind"] == "epoch"]["loss"].to_numpy()
    assert epochs[-1] < epochs[1], epochs


def test_metrics_log_forgets_what_a_checkpoint_has_not_seen(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / METRICS_CSV, "a", enabled=True)
    other = MetricsLog(tmp_path / METRICS_CSV, "b", enabled=True)
    for step in (1, 2):
        log.write({"kind": "step", "epoch": 1, "step": step, "loss": 1.0})
    log.write({"kind": "epoch", "epoch": 1, "step": 2, "loss": 1.0})  # after the checkpoint
    other.write({"kind": "step", "epoch": 1, "step": 9, "loss": 1.0})
    log.write({"kind": "step", "epoch": 2, "step": 3, "loss": 1.0})
    # a checkpoint at step 2 written before epoch 1's end-of-epoch row
    log.truncate(after_step=2, epochs_done=0)
    rows = pd.read_csv(tmp_path / METRICS_CSV)
    assert list(zip(rows["run"], rows["kind"], rows["step"], strict=True)) == [
        ("a", "step", 1),
        ("a", "step", 2),
        ("b", "step", 9),
    ]
    log.truncate()
    assert list(pd.read_csv(tmp_path / METRICS_CSV)["run"]) == ["b"]


def test_teacher_follows_only_trained_parameters() -> None:
    torch.manual_seed(0)
    student = create_model(TINY, context_length=77).model
    apply_freezing(student, "image")
    teacher = EMATeacher(student, momentum=0.9)
    before = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    with torch.no_grad():
        for param in student.parameters():
            param.add_(1.0)
    teacher.update(student, trainable_only=True)
    after, now = teacher.module.state_dict(), student.state_dict()
    for name, param in student.named_parameters():
        if param.requires_grad:  # m * old + (1 - m) * new, in the same order of operations
            assert torch.equal(after[name], before[name].mul(0.9).add(now[name], alpha=0.1))
        else:
            assert torch.equal(after[name], before[name])


def test_train_stage_checks_device_and_inputs_first(small_run: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="from a random init on a CPU") as err:
        train_stage(small_run, model="ViT-B-16", device="cpu", run_dir=tmp_path)
    assert "--from-scratch" in err.value.hint
    with pytest.raises(InputError, match="not both and not neither"):
        train_stage(model=TINY)
    with pytest.raises(InputError, match="does not exist"):
        train_stage(small_run, model=TINY, checkpoint=str(tmp_path / "missing.pt"))
    assert not any(tmp_path.iterdir())


def test_train_stage_on_a_pairs_file_records_nothing(small_run: Path, tmp_path: Path) -> None:
    from urbangeo.model.data import load_pairs

    pairs = load_pairs(small_run)[[C.PATH, C.CAPTION]]
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    result = train_stage(pairs=tmp_path / "pairs.csv", **FAST, epochs=1, batch_size=8)
    assert result.path is None and result.counts["steps"] == 3
    assert (tmp_path / C.CHECKPOINTS_DIR / "urbanln" / "model.pt").is_file()
