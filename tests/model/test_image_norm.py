"""Image normalisation by the training data's own statistics: the statistics against numpy, the
transforms against a direct formula, and what the trainer records and embedding reuses."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.model.synthetic import make_run
from urbangeo.model.clip import (
    ModelConfigError,
    checkpoint_metadata,
    create_model,
    unnormalized_transform,
    with_image_normalization,
)
from urbangeo.model.data import channel_stats, load_pairs, split_pairs
from urbangeo.model.encoders import build_encoder
from urbangeo.model.stages import train_stage
from urbangeo.progress import set_mode

TINY = "urbangeo-tiny-vit"  # 64 px input: 64 px files pass its resize and crop unchanged
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FAST = {"model": TINY, "lr": 1e-3, "weight_decay": 0.0, "warmup_steps": 1, "epochs": 1}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _quiet():
    set_mode("none")


def _numpy_stats(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.concatenate(
        [np.asarray(Image.open(p).convert("RGB"), dtype=np.float64).reshape(-1, 3) for p in paths]
    )
    pixels /= 255.0
    return pixels.mean(0), pixels.std(0)


def _images(folder: Path, n: int, size: int = 64) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        # channels with different means and spreads, like a rendered map
        pixels = rng.normal([200, 120, 60], [10, 40, 25], (size, size, 3)).clip(0, 255)
        path = folder / f"img{i}.png"
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_channel_stats_against_numpy(tmp_path: Path) -> None:
    paths = _images(tmp_path, 5)
    transform = unnormalized_transform(create_model(TINY, context_length=77).model)
    mean, std = channel_stats(paths, transform)
    want_mean, want_std = _numpy_stats(paths)
    np.testing.assert_allclose(mean, want_mean, atol=2e-6)
    np.testing.assert_allclose(std, want_std, atol=2e-6)
    assert std[0] < std[2] < std[1]

    # a sample of two images: the statistics of one of the pairs
    sample = channel_stats(paths, transform, limit=2, seed=3)
    pairs = [_numpy_stats(list(pair)) for pair in itertools.combinations(paths, 2)]
    assert any(np.allclose(sample[0], m, atol=2e-6) and np.allclose(sample[1], s) for m, s in pairs)

    # files that do not decode are skipped; none left gives None
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    assert channel_stats([*paths, str(broken)], transform) == (mean, std)
    assert channel_stats([str(broken)], transform) is None

    # a flat channel gets the floor, not a zero that would divide
    flat = tmp_path / "flat.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(flat)
    assert channel_stats([str(flat)], transform)[1] == pytest.approx((1 / 255,) * 3, abs=1e-6)


def test_transforms_normalise_by_the_given_statistics(tmp_path: Path) -> None:
    mean, std = (0.7, 0.5, 0.3), (0.1, 0.2, 0.05)
    bundle = create_model(TINY, context_length=77, image_mean=mean, image_std=std)
    image = Image.open(_images(tmp_path, 1)[0]).convert("RGB")
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    want = (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(bundle.preprocess(image), want, rtol=1e-5, atol=1e-5)
    assert tuple(bundle.model.visual.preprocess_cfg["mean"]) == mean
    normalize = [t for t in bundle.preprocess_train.transforms if hasattr(t, "mean")]
    assert [tuple(t.mean) for t in normalize] == [mean] and tuple(normalize[0].std) == std
    # the architecture's own normalisation when none is given
    plain = create_model(TINY, context_length=77)
    want = (pixels - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    torch.testing.assert_close(plain.preprocess(image), want, rtol=1e-5, atol=1e-5)

    with pytest.raises(ModelConfigError, match="together"):
        create_model(TINY, context_length=77, image_mean=mean)
    with pytest.raises(ModelConfigError, match="std > 0"):
        with_image_normalization(plain, mean, (0.1, 0.0, 0.1))


def test_trainer_records_the_data_statistics_and_embedding_uses_them(tmp_path: Path) -> None:
    gpkg = make_run(tmp_path / "run", n=12, extra_statuses=False)
    train_paths = split_pairs(load_pairs(gpkg), 0.25)[0]["path"].tolist()
    want_mean, want_std = _numpy_stats(train_paths)

    # a random init: the training images' statistics, in both checkpoints
    train_stage(gpkg, **FAST, batch_size=4, val_fraction=0.25, queue_size=8)
    model_pt = gpkg.parent / "checkpoints" / "urbanln" / "model.pt"
    meta = checkpoint_metadata(model_pt)
    np.testing.assert_allclose(meta["image_mean"], want_mean, atol=2e-6)
    np.testing.assert_allclose(meta["image_std"], want_std, atol=2e-6)
    assert checkpoint_metadata(model_pt.parent / "last.pt")["image_mean"] == meta["image_mean"]

    # embedding normalises exactly as training did
    encoder = build_encoder("trained", checkpoint=model_pt)
    assert encoder.info["image_mean"] == meta["image_mean"]
    image = Image.open(train_paths[0]).convert("RGB")
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    mean = torch.tensor(meta["image_mean"], dtype=torch.float32)[:, None, None]
    std = torch.tensor(meta["image_std"], dtype=torch.float32)[:, None, None]
    torch.testing.assert_close(encoder.transform(image), (pixels - mean) / std)

    # fine-tuning from that checkpoint keeps its statistics, even on other images
    other = make_run(tmp_path / "other", n=12, extra_statuses=False)
    for path in split_pairs(load_pairs(other), 0.25)[0]["path"]:
        Image.new("RGB", (64, 64), (255, 255, 255)).save(path)
    train_stage(
        other, **FAST, batch_size=4, val_fraction=0.25, queue_size=8, checkpoint=str(model_pt)
    )
    tuned = checkpoint_metadata(other.parent / "checkpoints" / "urbanln" / "model.pt")
    assert tuned["image_mean"] == meta["image_mean"] and tuned["image_std"] == meta["image_std"]

    # asked for the architecture's own: nothing recorded, CLIP's statistics used
    train_stage(
        gpkg, **FAST, batch_size=4, val_fraction=0.25, queue_size=8, image_norm="model",
        name="clip-norm",
    )  # fmt: skip
    plain_pt = gpkg.parent / "checkpoints" / "clip-norm" / "model.pt"
    assert "image_mean" not in checkpoint_metadata(plain_pt)
    plain = build_encoder("trained", checkpoint=plain_pt)
    want = (pixels - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    torch.testing.assert_close(plain.transform(image), want, rtol=1e-5, atol=1e-5)


def test_resume_keeps_the_statistics_it_started_with(tmp_path: Path) -> None:
    gpkg = make_run(tmp_path / "run", n=12, extra_statuses=False)
    settings = dict(FAST, epochs=2, batch_size=3, val_fraction=0.25, queue_size=8)
    train_stage(gpkg, **settings, stop_after=2)
    last = gpkg.parent / "checkpoints" / "urbanln" / "last.pt"
    before = checkpoint_metadata(last)
    # the images change on disk after the interruption: the resumed run keeps its inputs as
    # they were normalised, as the weights it resumes expect
    for path in load_pairs(gpkg)["path"]:
        Image.new("RGB", (64, 64), (0, 0, 0)).save(path)
    train_stage(gpkg, **settings, resume=True)
    after = checkpoint_metadata(gpkg.parent / "checkpoints" / "urbanln" / "model.pt")
    assert after["image_mean"] == before["image_mean"] and after["image_std"] == before["image_std"]


def test_bad_image_norm_setting(tmp_path: Path) -> None:
    from urbangeo.errors import InputError

    gpkg = make_run(tmp_path / "run", n=6, extra_statuses=False)
    with pytest.raises(InputError, match="image_norm"):
        train_stage(gpkg, **FAST, image_norm="imagenet")


def test_where_the_normalisation_comes_from() -> None:
    from urbangeo.model.training import image_norm_source
    from urbangeo.settings import TrainSettings

    vit = "ViT-B-16"
    assert image_norm_source(TrainSettings(model=TINY)) == "data"  # a random init
    assert image_norm_source(TrainSettings(model=vit, pretrained="openai")) == "model"
    assert image_norm_source(TrainSettings(model="hf-hub:org/clip")) == "model"  # own weights
    assert image_norm_source(TrainSettings(model=TINY, checkpoint="m.pt")) == "checkpoint"
    assert image_norm_source(TrainSettings(model=TINY, image_norm="model")) == "model"
    assert image_norm_source(TrainSettings(model=vit, pretrained="openai", image_norm="data")) == (
        "data"
    )


def test_a_checkpoint_brings_its_statistics_wherever_it_is_loaded(tmp_path: Path) -> None:
    gpkg = make_run(tmp_path / "run", n=12, extra_statuses=False)
    train_stage(gpkg, **FAST, batch_size=4, val_fraction=0.25, queue_size=8)
    model_pt = gpkg.parent / "checkpoints" / "urbanln" / "model.pt"
    meta = checkpoint_metadata(model_pt)
    image = Image.open(load_pairs(gpkg)["path"].iloc[0]).convert("RGB")
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    mean = torch.tensor(meta["image_mean"], dtype=torch.float32)[:, None, None]
    std = torch.tensor(meta["image_std"], dtype=torch.float32)[:, None, None]
    want = (pixels - mean) / std
    # create_model, as TrainResult.model_path promises, and frozen-clip with --weights
    torch.testing.assert_close(create_model(TINY, checkpoint=model_pt).preprocess(image), want)
    frozen = build_encoder("frozen-clip", model=TINY, weights=model_pt)
    torch.testing.assert_close(frozen.transform(image), want)
    # unless told not to
    raw = create_model(TINY, checkpoint=model_pt, checkpoint_norm=False).preprocess(image)
    clip = (pixels - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    torch.testing.assert_close(raw, clip, rtol=1e-5, atol=1e-5)


def test_a_checkpoint_from_before_image_norm_resumes(tmp_path: Path) -> None:
    """last.pt written before the setting existed: no image_norm in its config, no statistics
    in its record. It resumes with the normalisation it was started with (CLIP's)."""
    gpkg = make_run(tmp_path / "run", n=12, extra_statuses=False)
    settings = dict(FAST, epochs=2, batch_size=3, val_fraction=0.25, queue_size=8)
    train_stage(gpkg, **settings, stop_after=2)
    last = gpkg.parent / "checkpoints" / "urbanln" / "last.pt"
    state = torch.load(last, weights_only=True)
    # settings added since: image_norm, and from_scratch (with TrainSettings)
    del state["config"]["image_norm"], state["config"]["from_scratch"]
    del state["urbangeo"]["image_mean"], state["urbangeo"]["image_std"]
    torch.save(state, last)
    train_stage(gpkg, **settings, resume=True)
    assert "image_mean" not in checkpoint_metadata(last.parent / "model.pt")
