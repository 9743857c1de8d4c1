"""Region embeddings: equal to the bare encoder, mean pooling, outputs, baselines, transfer."""

from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.conftest import require
from tests.model.helpers import tiny_checkpoint
from tests.model.synthetic import BOTH, make_run
from urbangeo import constants as C
from urbangeo.errors import InputError, OutputError, UrbangeoWarning
from urbangeo.io.gpkg import read_layer
from urbangeo.io.runs import read_stage_records
from urbangeo.model.clip import ModelConfigError, create_model
from urbangeo.model.data import load_pairs, read_image_rows
from urbangeo.model.embed import embed_images, embed_regions, pool_by_region, read_parquet
from urbangeo.model.encoders import build_encoder, image_statistics, resnet18_encoder
from urbangeo.model.stages import embed_stage

TINY = "urbangeo-tiny-vit"


pytestmark = pytest.mark.usefixtures("one_thread", "quiet_progress")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """12 regions, 3 street-view and 3 overhead images each."""
    return make_run(tmp_path_factory.mktemp("embed") / "run", n=36, per_region=3, kinds=BOTH)


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A model.pt as `urbangeo train` writes it, for a 248-token tiny model."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", seed=42)


def _direct_features(model: torch.nn.Module, preprocess, paths: list[str]) -> np.ndarray:
    pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        return model.encode_image(pixels, normalize=True).numpy()


def test_embeddings_equal_the_bare_encoder(run: Path, trained_checkpoint) -> None:
    path, model = trained_checkpoint
    encoder = build_encoder("trained", checkpoint=path)
    assert encoder.dim == 64 and encoder.info["model"] == TINY
    images = read_image_rows(run)
    paths = images[images[C.STATUS] == C.STATUS_OK][C.PATH].tolist()[:10]
    features, ok = embed_images(encoder, paths, batch_size=4)
    assert ok.all() and features.dtype == np.float32
    preprocess = create_model(TINY).preprocess
    expected = _direct_features(model, preprocess, paths)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)


def test_region_vectors_are_means_of_their_images(run: Path, trained_checkpoint) -> None:
    path, model = trained_checkpoint
    encoder = build_encoder("trained", checkpoint=path)
    emb = embed_regions(run, encoder, kind="auto", batch_size=7)
    assert emb.kind == C.KIND_STREETVIEW and emb.dim == 64
    assert emb.counts["regions"] == 12 and emb.counts["images_embedded"] == 36

    images = read_image_rows(run)
    street = images[(images[C.KIND] == C.KIND_STREETVIEW) & (images[C.STATUS] == C.STATUS_OK)]
    direct = _direct_features(model, encoder.transform, street[C.PATH].tolist())
    frame = pd.DataFrame(direct.astype(np.float64))
    expected = frame.groupby(street[C.REGION_ID].to_numpy()).mean()
    got = emb.frame.set_index(C.REGION_ID)
    np.testing.assert_allclose(
        got.loc[expected.index, emb.vector_columns].to_numpy(), expected.to_numpy(), atol=1e-5
    )
    assert (got["n_images"] == 3).all()

    both = embed_regions(run, encoder, kind="concat")
    assert both.dim == 128 and (both.frame["n_images"] == 6).all()
    sat = embed_regions(run, encoder, kind=C.KIND_OVERHEAD).frame.set_index(C.REGION_ID)
    joined = both.frame.set_index(C.REGION_ID)
    np.testing.assert_allclose(
        joined[[f"e{i}" for i in range(64)]].to_numpy(),
        sat.loc[joined.index, [f"e{i}" for i in range(64)]].to_numpy(),
        atol=1e-6,  # other batches: float rounding only
    )
    np.testing.assert_allclose(
        joined[[f"e{i}" for i in range(64, 128)]].to_numpy(),
        got.loc[joined.index, emb.vector_columns].to_numpy(),
        atol=1e-6,
    )


def test_pooling_skips_failed_images() -> None:
    feats = np.array([[1.0, 2.0], [3.0, 4.0], [np.nan, np.nan], [5.0, 7.0]])
    ids, means, counts = pool_by_region(feats, ["b", "b", "a", "a"], np.array([1, 1, 0, 1], bool))
    assert ids == ["a", "b"] and counts.tolist() == [1, 2]
    np.testing.assert_allclose(means, [[5.0, 7.0], [2.0, 3.0]])


def test_embed_stage_outputs_and_qgis(run: Path, trained_checkpoint, tmp_path: Path) -> None:
    path, _ = trained_checkpoint
    gpkg = make_run(tmp_path / "city", n=9, per_region=3)  # another run: transfer
    broken = sorted((gpkg.parent / "images" / "streetview").glob("*.png"))[0]
    broken.write_bytes(b"garbage")
    result = embed_stage(gpkg, checkpoint=path)
    assert result.counts["failed_images"] == 1 and result.counts["regions"] == 3

    frame, meta = read_parquet(gpkg.parent / C.EMBEDDINGS_PARQUET)
    assert list(frame.columns) == [C.REGION_ID] + [f"e{i}" for i in range(64)]
    assert all(frame[f"e{i}"].dtype == np.float32 for i in range(64))
    assert meta["encoder"] == "trained" and meta["checkpoint"] == str(path)
    layer = read_layer(gpkg, C.LAYER_REGION_EMBEDDINGS)
    assert len(layer) == 3 and layer.crs == read_layer(gpkg, C.LAYER_REGIONS).crs
    assert sorted(layer["n_images"]) == [2, 3, 3]
    np.testing.assert_allclose(
        layer.sort_values(C.REGION_ID)[[f"e{i}" for i in range(64)]].to_numpy(),
        frame.sort_values(C.REGION_ID)[[f"e{i}" for i in range(64)]].to_numpy(),
        rtol=1e-6,
    )
    record = read_stage_records(gpkg)["embed"]
    assert record.params["encoder"] == "trained" and record.counts["dim"] == 64

    with pytest.raises(OutputError, match="already exist"):
        embed_stage(gpkg, checkpoint=path)

    require(_has_qgis(), "QGIS (python3-qgis)", "apt-get install python3-qgis qgis-providers")
    probe = subprocess.run(
        ["/usr/bin/python3", "-c", QGIS_PROBE, str(gpkg)], capture_output=True, text=True
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    info = json.loads(probe.stdout.strip().splitlines()[-1])
    assert info == {"valid": True, "count": 3, "polygon": True, "e63": True}


QGIS_PROBE = r"""
import json, os, sys
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from qgis.core import QgsApplication, QgsVectorLayer, QgsWkbTypes
app = QgsApplication([], False)
app.initQgis()
layer = QgsVectorLayer(f"{sys.argv[1]}|layername=region_embeddings", "emb", "ogr")
out = {
    "valid": layer.isValid(),
    "count": layer.featureCount(),
    "polygon": layer.geometryType() == QgsWkbTypes.PolygonGeometry,
    "e63": layer.fields().indexOf("e63") >= 0,
}
del layer
app.exitQgis()
print(json.dumps(out))
"""


def _has_qgis() -> bool:
    if not Path("/usr/bin/python3").exists():
        return False
    probe = subprocess.run(["/usr/bin/python3", "-c", "import qgis.core"], capture_output=True)
    return probe.returncode == 0


def test_image_statistics_against_numpy(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (13, 17, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    encoder = build_encoder("image-stats")
    features, ok = embed_images(encoder, [tmp_path / "x.png"])
    flat = pixels.reshape(-1, 3).astype(np.float64) / 255
    hist = [np.histogram(pixels[..., c], bins=np.linspace(0, 256, 9))[0] / 221 for c in range(3)]
    expected = np.concatenate([flat.mean(0), flat.std(0), *hist])
    assert encoder.dim == 30 and ok.all()
    np.testing.assert_allclose(features[0], expected, rtol=1e-6)
    np.testing.assert_allclose(image_statistics(Image.fromarray(pixels)), expected, rtol=1e-6)


def test_resnet18_from_a_local_weights_file(tmp_path: Path, run: Path) -> None:
    from torchvision.models import resnet18

    torch.manual_seed(3)
    net = resnet18(weights=None).eval()
    torch.save(net.state_dict(), tmp_path / "resnet18.pth")
    encoder = resnet18_encoder(tmp_path / "resnet18.pth")
    paths = load_pairs(run)[C.PATH].tolist()[:2]
    features, _ = embed_images(encoder, paths)
    net.fc = torch.nn.Identity()
    pixels = torch.stack([encoder.transform(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        expected = net(pixels).numpy()
    assert features.shape == (2, 512)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)

    with pytest.warns(UrbangeoWarning, match="randomly initialised"):
        assert build_encoder("resnet18").dim == 512
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(InputError, match="not a torchvision ResNet-18"):
        resnet18_encoder(tmp_path / "bad.pth")


def test_clip_baselines(tmp_path: Path, run: Path) -> None:
    random_ = build_encoder("random", model=TINY, seed=1)
    again = build_encoder("random", model=TINY, seed=1)
    paths = load_pairs(run)[C.PATH].tolist()[:3]
    a, _ = embed_images(random_, paths)
    b, _ = embed_images(again, paths)
    np.testing.assert_array_equal(a, b)  # seeded
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)

    with pytest.warns(UrbangeoWarning, match="randomly initialised"):
        build_encoder("frozen-clip", model=TINY)
    torch.manual_seed(5)
    model = create_model(TINY, context_length=77).model.eval()
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    frozen = build_encoder("frozen-clip", model=TINY, weights=tmp_path / "clip.pt")
    features, _ = embed_images(frozen, paths)
    expected = _direct_features(model, frozen.transform, paths)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)


def test_a_random_encoder_normalises_by_the_images_it_embeds(run: Path) -> None:
    """Like a model trained from scratch (train --image-norm auto): the fair random baseline."""
    paths = load_pairs(run)[C.PATH].tolist()
    pixels = np.concatenate(
        [np.asarray(Image.open(p).convert("RGB"), dtype=np.float64).reshape(-1, 3) for p in paths]
    )
    mean, std = pixels.mean(0) / 255, pixels.std(0) / 255  # 64 px files: no resize
    for name in ("random", "frozen-clip"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UrbangeoWarning)  # frozen-clip without weights
            encoder = build_encoder(name, model=TINY, seed=3)
        assert encoder.fit is not None and "image_mean" not in encoder.info
        fitted = encoder.fit(paths)
        np.testing.assert_allclose(fitted.info["image_mean"], mean, atol=2e-6)
        np.testing.assert_allclose(fitted.info["image_std"], std, atol=2e-6)
        image = Image.open(paths[0]).convert("RGB")
        raw = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
        want = (raw - torch.tensor(mean, dtype=torch.float32)[:, None, None]) / torch.tensor(
            std, dtype=torch.float32
        )[:, None, None]
        torch.testing.assert_close(fitted.transform(image), want, rtol=1e-5, atol=1e-5)
        # the same weights: only the inputs changed
        assert fitted.module.model is encoder.module.model

    emb = embed_regions(run, build_encoder("random", model=TINY), kind="overhead")
    sat = load_pairs(run, kind=C.KIND_OVERHEAD)[C.PATH].tolist()
    ov_pixels = np.concatenate(
        [np.asarray(Image.open(p).convert("RGB"), dtype=np.float64).reshape(-1, 3) for p in sat]
    )
    np.testing.assert_allclose(emb.info["image_mean"], ov_pixels.mean(0) / 255, atol=2e-6)
    # pretrained-style encoders keep their own normalisation
    assert build_encoder("image-stats").fit is None


def test_bad_encoder_inputs(run: Path, trained_checkpoint, tmp_path: Path) -> None:
    path, _ = trained_checkpoint
    with pytest.raises(InputError, match="Unknown encoder"):
        build_encoder("vgg")
    with pytest.raises(ModelConfigError, match="trained with architecture"):
        build_encoder("trained", checkpoint=path, model="urbangeo-tiny-vit-96")
    other = create_model("urbangeo-tiny-vit-96", context_length=77).model
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(ModelConfigError, match="does not fit architecture"):
        build_encoder("trained", checkpoint=tmp_path / "other.pt", model=TINY)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(InputError, match="Cannot read the checkpoint"):
        build_encoder("trained", checkpoint=tmp_path / "junk.pt")
    with pytest.raises(InputError, match="No trained model") as err:
        embed_stage(run, overwrite=True, name="never-trained")
    assert "urbangeo train" in err.value.hint
    with pytest.raises(InputError, match="No overhead"):
        embed_stage(make_run(tmp_path / "sv", n=2), encoder="image-stats", kind="overhead")


def test_very_wide_vectors_go_into_one_json_column(tmp_path: Path) -> None:
    from tests.model.synthetic import regions_frame
    from urbangeo.io.gpkg import write_layers
    from urbangeo.model.embed import RegionEmbeddings, region_layer, vector_columns

    dim = 2048  # ViT-L concat and beyond: more columns than SQLite allows
    vectors = np.random.default_rng(0).normal(size=(2, dim)).astype(np.float32)
    frame = pd.DataFrame(vectors, columns=vector_columns(dim))
    frame.insert(0, "n_images", [1, 2])
    frame.insert(0, C.REGION_ID, ["r0", "r1"])
    layer = region_layer(RegionEmbeddings(frame, dim, "streetview"), regions_frame(3))
    assert list(layer.columns) == [C.REGION_ID, "geometry", "n_images", "embedding"]
    write_layers(tmp_path / "x.gpkg", {C.LAYER_REGION_EMBEDDINGS: layer})
    back = read_layer(tmp_path / "x.gpkg", C.LAYER_REGION_EMBEDDINGS)
    np.testing.assert_array_equal(np.float32(json.loads(back["embedding"][1])), vectors[1])
