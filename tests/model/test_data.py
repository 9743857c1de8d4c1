"""Pairs from a run GeoPackage or a pairs file, the fixed split, tokens, decoding, sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from tests.model.synthetic import BOTH, caption, combos, make_run
from urbangeo import constants as C
from urbangeo.errors import InputError, MissingLayerError, UrbangeoWarning
from urbangeo.io.gpkg import write_layers
from urbangeo.model.clip import LongTokenizer
from urbangeo.model.data import (
    ImageDataset,
    ResumableSampler,
    TokenTable,
    collate_images,
    drop_missing_files,
    load_pairs,
    split_pairs,
    tokenize_captions,
)

TINY = "urbangeo-tiny-vit"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("data") / "run", n=8, per_region=2, kinds=BOTH)


def test_pairs_are_ok_images_with_their_selected_caption(run: Path) -> None:
    pairs = load_pairs(run)
    assert list(pairs.columns) == [C.IMAGE_ID, C.PATH, C.CAPTION, C.REGION_ID, C.KIND]
    assert len(pairs) == 16  # 8 per kind; the missing and the failed image are left out
    assert not pairs[C.IMAGE_ID].str.startswith("x-").any()
    assert list(pairs[C.IMAGE_ID]) == sorted(pairs[C.IMAGE_ID])
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in pairs[C.PATH])
    expected = {f"{k[:2]}{i:04d}": caption(*combos()[i]) for i in range(8) for k in ("st", "ov")}
    assert dict(zip(pairs[C.IMAGE_ID], pairs[C.CAPTION], strict=True)) == expected
    assert set(pairs[C.REGION_ID]) == {"r0", "r1", "r2", "r3"}

    street = load_pairs(run, kind=C.KIND_STREETVIEW)
    assert len(street) == 8 and set(street[C.KIND]) == {C.KIND_STREETVIEW}


def test_spatial_images_layer_reads_the_same(tmp_path: Path) -> None:
    gpkg = make_run(tmp_path / "run", n=3, spatial_images=True)
    assert len(load_pairs(gpkg)) == 3


def test_pairs_file_csv_and_parquet(run: Path, tmp_path: Path) -> None:
    folder = run.parent
    rel = [f"images/streetview/st{i:04d}.png" for i in range(3)]
    csv = folder / "pairs.csv"
    pd.DataFrame({"image": rel, "Text": ["a", "b", "c"]}).to_csv(csv, index=False)
    pairs = load_pairs(csv)
    assert list(pairs[C.CAPTION]) == ["a", "b", "c"]
    assert list(pairs[C.PATH]) == [str(folder / r) for r in rel]
    assert pairs[C.REGION_ID].isna().all()

    parquet = tmp_path / "pairs.parquet"
    absolute = [str(folder / r) for r in rel]
    frame = pd.DataFrame({"path": absolute, "caption": ["x", "y", "z"], "region_id": [1, 1, 2]})
    frame.to_parquet(parquet)
    pairs = load_pairs(parquet)
    assert list(pairs[C.PATH]) == absolute and list(pairs[C.REGION_ID]) == [1, 1, 2]

    bad = tmp_path / "bad.csv"
    pd.DataFrame({"file_name": rel, "caption": ["a", "b", "c"]}).to_csv(bad, index=False)
    with pytest.raises(InputError, match="no image path column"):
        load_pairs(bad)


def test_empty_or_missing_inputs_fail_clearly(run: Path, tmp_path: Path) -> None:
    gpkg = make_run(tmp_path / "sv", n=2)
    with pytest.raises(InputError, match="No image–caption pairs of kind 'overhead'") as err:
        load_pairs(gpkg, kind=C.KIND_OVERHEAD)
    assert "captions stages" in err.value.hint

    empty = tmp_path / "nosel" / "run.gpkg"
    captions = pd.DataFrame(
        {C.IMAGE_ID: ["a"], C.CAPTION: ["x"], C.SELECTED: [False], C.SCORE: [0.5]}
    )
    images = pd.DataFrame(
        {C.IMAGE_ID: ["a"], C.KIND: [C.KIND_OVERHEAD], C.PATH: ["a.png"], C.STATUS: ["ok"]}
    )
    write_layers(empty, {C.LAYER_IMAGES: images, C.LAYER_CAPTIONS: captions})
    with pytest.raises(InputError, match="No image–caption pairs"):
        load_pairs(empty)

    only_images = tmp_path / "noimg" / "run.gpkg"
    write_layers(only_images, {C.LAYER_IMAGES: images})
    with pytest.raises(MissingLayerError, match="captions") as err:
        load_pairs(only_images)
    assert "`urbangeo caption` on this GeoPackage" in err.value.hint
    with pytest.raises(InputError, match="does not exist"):
        load_pairs(tmp_path / "nothing.gpkg")
    with pytest.raises(InputError, match="unknown file type"):
        load_pairs(run.parent / "images" / "streetview" / "st0000.png")


def test_missing_files_are_dropped_with_a_warning(run: Path) -> None:
    pairs = load_pairs(run)
    pairs.loc[0, C.PATH] = "/nonexistent/image.png"
    with pytest.warns(UrbangeoWarning, match="1 of 16 image file"):
        kept, missing = drop_missing_files(pairs)
    assert missing == 1 and len(kept) == 15


def test_split_is_fixed_by_names_and_keeps_regions_together() -> None:
    n = 200
    pairs = pd.DataFrame(
        {
            C.IMAGE_ID: [f"i{k}" for k in range(n)],
            C.PATH: [f"/x/{k}.png" for k in range(n)],
            C.CAPTION: ["c"] * n,
            C.REGION_ID: [f"r{k // 4}" for k in range(n)],
            C.KIND: ["streetview"] * n,
        }
    )
    train, val = split_pairs(pairs, 0.2)
    assert len(val) == 40 and len(train) == 160  # 10 of 50 regions, 4 images each
    assert not set(train[C.REGION_ID]) & set(val[C.REGION_ID])
    shuffled = pairs.sample(frac=1.0, random_state=3)
    _, val2 = split_pairs(shuffled, 0.2)
    assert set(val2[C.IMAGE_ID]) == set(val[C.IMAGE_ID])
    # without regions, single images are the groups
    no_region = pairs.assign(**{C.REGION_ID: None})
    _, val3 = split_pairs(no_region, 0.1)
    assert len(val3) == 20
    assert split_pairs(pairs, 0.0)[1].empty
    # a cap on the held-out regions keeps the first of the same order; the rest train
    train4, val4 = split_pairs(pairs, 0.2, max_groups=3)
    assert len(val4) == 12 and len(train4) == 188
    assert set(val4[C.REGION_ID]) < set(val[C.REGION_ID])
    assert split_pairs(pairs, 0.2, max_groups=10)[1].equals(val)


def test_token_table_tokenises_the_rows_asked_for() -> None:
    tokenizer = LongTokenizer.for_model(TINY, 248)
    long_ = " ".join(["many tall buildings along a busy street"] * 60)
    captions = [f"a red square number {i}" if i % 3 else long_ + f" {i}" for i in range(10)]
    asked: list[int] = []

    class Counting:
        context_length = tokenizer.context_length

        def __call__(self, texts):
            asked.append(len(texts))
            return tokenizer(texts)

        def count_tokens(self, text):
            return tokenizer.count_tokens(text)

    table = TokenTable(captions, Counting())
    eager, cut = tokenize_captions(captions, tokenizer)  # every row at once, as before
    rows = torch.tensor([7, 0, 3, 3])
    assert len(table) == 10 and sum(asked) == 0  # nothing tokenised up front
    assert torch.equal(table[rows], eager[rows]) and table[rows].dtype == torch.int32
    assert sum(asked) == 8 and table.seen == {0, 3, 7} and table.truncated == {0, 3}
    assert torch.equal(table[torch.arange(10)], eager) and len(table.truncated) == cut == 4


def test_tokens_truncate_long_captions_and_count_them() -> None:
    tokenizer = LongTokenizer.for_model(TINY, 248)
    short = "a red square"
    long_ = " ".join(["many tall buildings along a busy street"] * 60)  # ~420 tokens
    exact = " ".join(["tree"] * 246)  # 246 words + start + end = 248 tokens exactly
    tokens, truncated = tokenize_captions([short, long_, exact, long_], tokenizer)
    assert truncated == 2
    assert tokens.dtype == torch.int32 and tokens.shape == (4, 248)
    base = open_clip.get_tokenizer(TINY)
    assert len(base.encode(exact)) + 2 == 248
    expected = base([short], context_length=248)[0]
    assert torch.equal(tokens[0].long(), expected)
    assert int(tokens[1, -1]) == base.eot_token_id and int(tokens[2, -1]) == base.eot_token_id


def test_undecodable_images_are_dropped_from_their_batch(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.new("RGB", (10, 8), (255, 0, 0)).save(good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:40])

    def transform(img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.array(img.resize((4, 4)))).permute(2, 0, 1).float()

    dataset = ImageDataset([str(good), str(broken), str(truncated), str(good)], transform)
    batch = collate_images([dataset[i] for i in range(4)])
    assert batch["images"].shape == (2, 3, 4, 4)
    assert batch["index"].tolist() == [0, 3] and batch["failed"].tolist() == [1, 2]
    assert collate_images([dataset[1]])["images"].numel() == 0


def test_augmentations_are_seeded_per_item_and_epoch(tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (20, 20, 3), np.uint8)).save(path)
        paths.append(str(path))

    def noisy(img: Image.Image) -> torch.Tensor:
        return torch.rand(3)  # stands for a random crop: any use of torch's global RNG

    dataset = ImageDataset(paths, noisy, augment_seed=7)
    first = [dataset[i][0] for i in (0, 1, 2)]
    torch.rand(5)  # the caller's RNG use does not matter
    again = [dataset[i][0] for i in (2, 0, 1)]
    assert torch.equal(first[0], again[1]) and torch.equal(first[2], again[0])
    before = torch.get_rng_state()
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0][0], first[0])
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is left untouched


def test_resumable_sampler_is_distributed_sampler_with_a_start() -> None:
    for rank in (0, 1):
        ours = ResumableSampler(11, num_replicas=2, rank=rank, seed=5)
        theirs = DistributedSampler(range(11), num_replicas=2, rank=rank, seed=5)
        for epoch in (0, 3):
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            full = list(theirs)
            ours.set_start(0)
            assert list(ours) == full and len(ours) == 6
            ours.set_start(4)
            assert list(ours) == full[4:] and len(ours) == 2
