"""Embedding holds ``chunk_size`` images in memory, not the run: a run whose image vectors
alone would exceed an address-space limit embeds under it, with the right values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.helpers import run_limited
from tests.model.synthetic import make_run, regions_frame
from urbangeo import constants as C
from urbangeo.io.gpkg import read_layer, write_layers
from urbangeo.model.embed import read_parquet
from urbangeo.model.encoders import image_statistics
from urbangeo.model.stages import embed_stage

pytestmark = pytest.mark.usefixtures("one_thread", "quiet_progress")


#: Image-statistics vectors repeated to this width: wide vectors at image-stats' cost.
REPEAT = 68
DIM = 30 * REPEAT
N_IMAGES = 30_000
PER_REGION = 2
#: Address space the embedding may add to the process after its imports and a warm-up.
BUDGET_MB = 256

CHILD = r"""
import json, resource, sys
import numpy as np, torch
from urbangeo.model.embed import embed_regions_to_parquet
from urbangeo.model.encoders.base import ImageEncoder
from urbangeo.model.encoders.image_stats import image_statistics

class Wide(ImageEncoder):
    def encode(self, batch):
        return batch.repeat(1, {repeat})

def wide():
    return Wide("wide-stats", {dim}, lambda im: torch.from_numpy(image_statistics(im)))

small, big, out = sys.argv[1:4]
embed_regions_to_parquet(small, wide(), out, chunk_size=256, keep_vectors=0)  # warm-up
limit = int((vm_mb() + {budget}) * 2**20)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
emb = embed_regions_to_parquet(big, wide(), out, chunk_size=1024, keep_vectors=0)
print("RESULT " + json.dumps({{"limit_mb": limit / 2**20, "counts": emb.counts,
      "columns": list(emb.frame.columns)}}))
"""


def _run(folder: Path, n_images: int, files: list[Path]) -> Path:
    """``n_images`` overhead rows, ``PER_REGION`` per region, cycling through ``files``."""
    regions = [f"r{i // PER_REGION}" for i in range(n_images)]
    images = pd.DataFrame(
        {
            C.IMAGE_ID: [f"ov{i}" for i in range(n_images)],
            C.KIND: C.KIND_OVERHEAD,
            C.REGION_ID: regions,
            C.PATH: [str(files[i % len(files)]) for i in range(n_images)],
            C.STATUS: C.STATUS_OK,
        }
    )
    gpkg = folder / "run.gpkg"
    write_layers(gpkg, {C.LAYER_IMAGES: images}, overwrite=True)
    return gpkg


def test_embedding_a_run_larger_than_the_memory_limit(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    files = []
    for i in range(7):  # 7 files, 2 images per region: the regions get different pairs
        files.append(tmp_path / f"f{i}.png")
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(files[-1])
    small = _run(tmp_path / "small", 64, files)
    big = _run(tmp_path / "big", N_IMAGES, files)
    # the image vectors alone (float32), as the whole-run code held them with a float64 copy
    assert N_IMAGES * DIM * (4 + 8) / 2**20 > 2 * BUDGET_MB
    out = tmp_path / "embeddings.parquet"
    code = CHILD.format(repeat=REPEAT, dim=DIM, budget=BUDGET_MB)
    stdout = run_limited(code, small, big, out)
    lines = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(lines[-1][len("RESULT ") :])
    n_regions = N_IMAGES // PER_REGION
    assert result["counts"]["regions"] == n_regions
    assert result["columns"] == [C.REGION_ID, "n_images"]  # no vectors kept in memory

    frame, meta = read_parquet(out)
    assert len(frame) == n_regions and meta["images_embedded"] == N_IMAGES
    assert frame[C.REGION_ID].tolist() == sorted(f"r{i}" for i in range(n_regions))
    stats = [image_statistics(Image.open(f)).astype(np.float64) for f in files]
    frame = frame.set_index(C.REGION_ID)
    for r in np.random.default_rng(1).choice(n_regions, 50, replace=False):
        mean = (stats[(2 * r) % 7] + stats[(2 * r + 1) % 7]) / 2
        np.testing.assert_allclose(
            frame.loc[f"r{r}"].to_numpy(np.float64), np.tile(mean, REPEAT), rtol=1e-6
        )


def test_chunks_give_the_same_outputs_and_a_large_layer_leaves_the_vectors_out(
    tmp_path: Path,
) -> None:
    """Small chunks (regions split between chunks) write what one chunk writes; above
    layer_vectors the layer holds polygons and n_images, and says where the vectors are."""
    gpkg = make_run(tmp_path / "a", n=30, per_region=3, kinds=(C.KIND_OVERHEAD,))
    embed_stage(gpkg, encoder="image-stats", chunk_size=4, batch_size=3)
    chunked, meta = read_parquet(gpkg.parent / C.EMBEDDINGS_PARQUET)
    embed_stage(gpkg, encoder="image-stats", chunk_size=10_000, overwrite=True, layer_vectors=5)
    whole, meta_whole = read_parquet(gpkg.parent / C.EMBEDDINGS_PARQUET)
    pd.testing.assert_frame_equal(chunked, whole)
    assert meta == meta_whole and meta["regions"] == 10
    layer = read_layer(gpkg, C.LAYER_REGION_EMBEDDINGS)
    assert list(layer.columns) == [C.REGION_ID, "n_images", "geometry"]
    assert sorted(layer["n_images"]) == [3] * 10
    import sqlite3

    with sqlite3.connect(gpkg) as con:
        (description,) = con.execute(
            "SELECT description FROM gpkg_contents WHERE table_name = ?",
            (C.LAYER_REGION_EMBEDDINGS,),
        ).fetchone()
    assert C.EMBEDDINGS_PARQUET in description and "--layer-vectors" in description
    # the expected values, independently: mean of the image statistics of each region
    images = read_layer(gpkg, C.LAYER_IMAGES)
    images = images[images[C.STATUS] == C.STATUS_OK]
    for region, rows in images.groupby(C.REGION_ID):
        expected = np.mean(
            [image_statistics(Image.open(gpkg.parent / p)) for p in rows[C.PATH]], axis=0
        )
        got = whole.set_index(C.REGION_ID).loc[region].to_numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert regions_frame(1).crs == layer.crs
