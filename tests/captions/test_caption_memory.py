"""The caption stage holds the images of the calls in flight, not the run's (issue #16, item 3).

A child process runs the stage with a captioner that looks at images, under an address-space
limit (``RLIMIT_AS``) that the images together exceed several times: the stage hashes each
image as it reads it and the calls read it again when they run. Before, it kept the bytes of
every image until the end and failed here with a MemoryError.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np

from tests.captions.helpers import make_run
from tests.helpers import run_limited
from urbangeo import constants as C
from urbangeo.io.gpkg import read_layer

#: Images (the sample grid's regions) and the size of each file: 9 x 32 MB = 288 MB of images.
N_IMAGES = 9
IMAGE_MB = 32
#: Address space the stage may add to the child after its imports and a warm-up run.
BUDGET_MB = 128

CHILD = r"""
import hashlib, json, resource, sys
from urbangeo.captions.captioners import Captioner
from urbangeo.captions.stages import caption_stage
from urbangeo.progress import set_mode

class Digest(Captioner):
    name = "digest"

    def caption(self, image, prompt, model, item):
        return f"{{model}} saw {{len(image)}} bytes, sha256 {{hashlib.sha256(image).hexdigest()}}."

set_mode("none")
small, big = sys.argv[1:3]
settings = dict(select="first", kinds=("overhead",), concurrency=2)
caption_stage(small, captioner=Digest(["m"]), **settings)  # warm-up: imports, threads
limit = int((vm_mb() + {budget}) * 2**20)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
result = caption_stage(big, captioner=Digest(["m"]), **settings)
print("RESULT " + json.dumps({{"limit_mb": limit / 2**20, "counts": result.counts}}))
"""


def _big_images(gpkg: Path) -> dict[str, bytes]:
    """Replace the run's overhead images by large files of random bytes; their contents."""
    images = read_layer(gpkg, C.LAYER_IMAGES)
    rng = np.random.default_rng(0)
    contents = {}
    for image_id, path in zip(images[C.IMAGE_ID], images[C.PATH], strict=True):
        if image_id.startswith(C.KIND_OVERHEAD):
            data = rng.integers(0, 256, IMAGE_MB << 20, dtype=np.uint8).tobytes()
            (gpkg.parent / path).write_bytes(data)
            contents[image_id] = data
    return contents


def test_captioning_images_larger_than_the_memory_limit(tmp_path: Path) -> None:
    import hashlib

    small = make_run(tmp_path / "small", n_regions=2, n_points=1)
    big = make_run(tmp_path / "big", n_regions=N_IMAGES, n_points=1)
    contents = _big_images(big)
    assert len(contents) == N_IMAGES
    assert N_IMAGES * IMAGE_MB > 2 * BUDGET_MB  # holding them all cannot fit
    stdout = run_limited(CHILD.format(budget=BUDGET_MB), small, big)
    result = json.loads(next(x for x in stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert result["counts"]["captions"] == N_IMAGES and result["counts"]["failed"] == 0

    table = gpd.read_file(big, layer=C.LAYER_CAPTIONS)
    for image_id, caption in zip(table[C.IMAGE_ID], table[C.CAPTION], strict=True):
        data = contents[image_id]  # each call saw its own image, whole
        assert caption == f"m saw {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}."


def test_each_image_is_read_once_for_all_its_calls(tmp_path: Path, monkeypatch) -> None:
    """Three models caption each image: its file is read to be hashed and once more for its
    three calls (not once per call), and every call sees the whole image."""
    from collections import Counter

    from urbangeo.captions.captioners import Captioner
    from urbangeo.captions.stages import caption_stage

    class Size(Captioner):
        name = "size"

        def caption(self, image, prompt, model, item):
            return f"{model} saw {len(image)} bytes."

    gpkg = make_run(tmp_path, n_regions=4, n_points=1)
    reads: Counter = Counter()
    original = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.suffix == ".png":
            reads[self.name] += 1
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    settings = dict(select="first", kinds=(C.KIND_OVERHEAD,), concurrency=3)
    result = caption_stage(gpkg, captioner=Size(["a", "b", "c"]), **settings)
    assert result.counts["captions"] == 4 * 3 and result.counts["failed"] == 0
    assert len(reads) == 4 and set(reads.values()) == {2}, reads
    table = gpd.read_file(gpkg, layer=C.LAYER_CAPTIONS)
    images = read_layer(gpkg, C.LAYER_IMAGES)
    paths = dict(zip(images[C.IMAGE_ID], images[C.PATH], strict=True))
    sizes = {i: (gpkg.parent / p).stat().st_size for i, p in paths.items() if p}
    for image_id, model, caption in zip(
        table[C.IMAGE_ID], table[C.MODEL], table[C.CAPTION], strict=True
    ):
        assert caption == f"{model} saw {sizes[image_id]} bytes."
