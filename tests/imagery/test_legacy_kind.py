"""Overhead images are called what they are; run folders of urbangeo 0.1 ("satellite") still
read and resume without redoing an image."""

from __future__ import annotations

import shutil

import pyogrio
import pytest

from urbangeo import constants as C
from urbangeo.errors import UrbangeoWarning
from urbangeo.imagery.kinds import describe_source, normalize_kinds, source_kind
from urbangeo.imagery.stages import tiles_stage
from urbangeo.io.gpkg import read_layer, write_layers
from urbangeo.io.runs import read_stage_records
from urbangeo.viz.thumbs import run_image_uris


def _raw_images(gpkg):
    """The images layer as stored (no normalisation)."""
    return pyogrio.read_dataframe(gpkg, layer=C.LAYER_IMAGES)


def as_written_by_0_1(gpkg) -> None:
    """Turn a run's overhead images into what urbangeo 0.1 wrote: kind "satellite", ids
    ``sat_{region_id}``, files in ``images/satellite/``."""
    images = read_layer(gpkg, C.LAYER_IMAGES)
    old_dir = gpkg.parent / C.LEGACY_OVERHEAD_DIR
    old_dir.mkdir(parents=True)
    for i, row in images.iterrows():
        old_id = "sat_" + row[C.IMAGE_ID].removeprefix("overhead_")
        old_path = f"{C.LEGACY_OVERHEAD_DIR}/{old_id}.png"
        (gpkg.parent / row[C.PATH]).rename(gpkg.parent / old_path)
        images.loc[i, [C.IMAGE_ID, C.KIND, C.PATH]] = [old_id, "satellite", old_path]
    (gpkg.parent / C.OVERHEAD_DIR).rmdir()
    write_layers(gpkg, {C.LAYER_IMAGES: images}, overwrite=True)


def test_a_new_run_writes_images_overhead(raster_run):
    gpkg, tif, regions = raster_run
    tiles_stage(gpkg, raster=tif, size=32)
    raw = _raw_images(gpkg)
    assert set(raw[C.KIND]) == {C.KIND_OVERHEAD}
    assert sorted(raw[C.IMAGE_ID]) == sorted(f"overhead_{r}" for r in regions[C.REGION_ID])
    assert all(p.startswith("images/overhead/overhead_") for p in raw[C.PATH])
    assert len(list((gpkg.parent / C.OVERHEAD_DIR).glob("overhead_*.png"))) == 6
    assert not (gpkg.parent / "images" / "satellite").exists()
    assert source_kind(raw[C.SOURCE][0]) == "imagery"  # a raster: recorded as its source


def test_an_old_run_folder_is_read_as_overhead_and_resumed_in_place(raster_run, count_tiles):
    gpkg, tif, regions = raster_run
    tiles_stage(gpkg, raster=tif, size=32)
    assert count_tiles["calls"] == 6
    as_written_by_0_1(gpkg)
    record = read_stage_records(gpkg)["tiles"]
    assert set(_raw_images(gpkg)[C.KIND]) == {"satellite"}

    # read: the old kind is normalised, ids and paths stay as they are
    images = read_layer(gpkg, C.LAYER_IMAGES)
    assert set(images[C.KIND]) == {C.KIND_OVERHEAD}
    assert all(p.startswith("images/satellite/sat_") for p in images[C.PATH])
    region_uris, _ = run_image_uris(gpkg)  # the offline map's base layer and tooltips
    assert sorted(region_uris) == sorted(regions[C.REGION_ID])

    # resumed: no image is made again, no file moved or rewritten, nothing written
    folder = gpkg.parent / C.LEGACY_OVERHEAD_DIR
    stamps = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    result = tiles_stage(gpkg, raster=tif, size=32)
    assert count_tiles["calls"] == 6
    assert result.counts["ok"] == 6
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    assert not (gpkg.parent / C.OVERHEAD_DIR).exists()
    assert read_stage_records(gpkg)["tiles"] == record  # the stage record is untouched
    assert sorted(read_layer(gpkg, C.LAYER_IMAGES)[C.IMAGE_ID]) == sorted(
        f"sat_{r}" for r in regions[C.REGION_ID]
    )

    # a changed image is made again where the run keeps it
    broken = folder / f"sat_{regions[C.REGION_ID][2]}.png"
    broken.write_bytes(b"not a png")
    tiles_stage(gpkg, raster=tif, size=32)
    assert count_tiles["calls"] == 7
    raw = _raw_images(gpkg).set_index(C.IMAGE_ID)
    assert set(raw[C.KIND]) == {C.KIND_OVERHEAD}  # rewritten: in the current spelling
    assert raw.loc[broken.stem, C.PATH] == f"{C.LEGACY_OVERHEAD_DIR}/{broken.name}"
    assert broken.read_bytes().startswith(b"\x89PNG")


def test_files_of_an_old_run_cut_off_before_its_layer_are_adopted(raster_run, count_tiles):
    """urbangeo 0.1 stopped after saving images, before writing the layer: its files in
    images/satellite/ are adopted, not made again."""
    gpkg, tif, _ = raster_run
    tiles_stage(gpkg, raster=tif, size=32)
    as_written_by_0_1(gpkg)
    images = read_layer(gpkg, C.LAYER_IMAGES)
    write_layers(gpkg, {C.LAYER_IMAGES: images.iloc[:0]}, overwrite=True)
    result = tiles_stage(gpkg, raster=tif, size=32)
    assert count_tiles["calls"] == 6
    assert result.counts["ok"] == 6
    assert set(read_layer(gpkg, C.LAYER_IMAGES)[C.IMAGE_ID].str[:4]) == {"sat_"}


def test_old_runs_overwrite_in_place(raster_run, count_tiles):
    gpkg, tif, _ = raster_run
    tiles_stage(gpkg, raster=tif, size=32)
    as_written_by_0_1(gpkg)
    tiles_stage(gpkg, raster=tif, size=48, overwrite=True)
    images = read_layer(gpkg, C.LAYER_IMAGES)
    assert set(images[C.WIDTH]) == {48}
    assert all(p.startswith("images/satellite/sat_") for p in images[C.PATH])
    assert not (gpkg.parent / C.OVERHEAD_DIR).exists()
    # a new folder (the old one removed by the user) gets the new names
    shutil.rmtree(gpkg.parent / "images")
    tiles_stage(gpkg, raster=tif, size=32, overwrite=True)
    assert all(p.startswith("images/overhead/") for p in read_layer(gpkg, C.LAYER_IMAGES)[C.PATH])


def test_old_captions_read_as_overhead(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({C.IMAGE_ID: ["sat_1", "sv_2"], C.KIND: ["satellite", "streetview"]})
    gpkg = write_layers(tmp_path / "run.gpkg", {C.LAYER_CAPTIONS: frame.copy()})
    assert set(pyogrio.read_dataframe(gpkg, layer=C.LAYER_CAPTIONS)[C.KIND]) == {
        "satellite",
        C.KIND_STREETVIEW,
    }
    kinds = read_layer(gpkg, C.LAYER_CAPTIONS)[C.KIND].tolist()
    assert kinds == [C.KIND_OVERHEAD, C.KIND_STREETVIEW]
    assert normalize_kinds(frame)[C.KIND].tolist() == [C.KIND_OVERHEAD, C.KIND_STREETVIEW]
    untouched = pd.DataFrame({C.IMAGE_ID: ["a"]})
    assert normalize_kinds(untouched).columns.tolist() == [C.IMAGE_ID]


@pytest.mark.parametrize(
    "source, words",
    [
        ("osm:/data/sao-paulo.osm.pbf", "overhead image (rendered OSM map)"),
        ("raster:/data/ortho.tif", "overhead image (aerial or satellite imagery)"),
        (
            "xyz:https://server.arcgisonline.com/ArcGIS/rest/services/World_Imagery/MapServer/"
            "tile/{z}/{y}/{x}@z17",
            "overhead image (aerial or satellite imagery)",
        ),
        ("xyz:https://tile.openstreetmap.org/{z}/{x}/{y}.png@z16", "overhead image (XYZ tiles)"),
        (None, "overhead image"),
        ("", "overhead image"),
    ],
)
def test_an_overhead_image_is_described_by_its_source(source, words):
    assert describe_source(source) == words


def test_pairs_of_an_old_run_and_the_old_kind_in_the_python_api(tmp_path):
    """Training pairs of a 0.1 run (images and captions of kind "satellite") are overhead
    pairs; ``kind="satellite"`` still selects them, with a deprecation message."""
    from tests.model.synthetic import make_run as make_model_run
    from urbangeo.model.data import load_pairs

    gpkg = make_model_run(tmp_path / "r", n=3, kinds=("satellite", C.KIND_STREETVIEW))
    assert set(_raw_images(gpkg)[C.KIND]) == {"satellite", C.KIND_STREETVIEW}
    new = load_pairs(gpkg, kind=C.KIND_OVERHEAD)
    assert len(new) == 3 and set(new[C.KIND]) == {C.KIND_OVERHEAD}
    assert set(load_pairs(gpkg)[C.KIND]) == {C.KIND_OVERHEAD, C.KIND_STREETVIEW}
    with pytest.warns(UrbangeoWarning, match="'satellite' is deprecated; use 'overhead'"):
        old = load_pairs(gpkg, kind="satellite")
    assert old.equals(new)
