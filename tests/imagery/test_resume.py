"""The images manifest: reruns skip finished images, interruptions lose nothing."""

from __future__ import annotations

import os

import pytest

from tests.imagery.helpers import X0, Y0, points
from urbangeo import constants as C
from urbangeo.errors import OutputError
from urbangeo.imagery.stages import tiles_stage
from urbangeo.io.files import sha256_file
from urbangeo.io.gpkg import list_layers, read_layer, write_layers
from urbangeo.io.runs import read_stage_records


def _images(gpkg):
    return read_layer(gpkg, C.LAYER_IMAGES).set_index(C.IMAGE_ID)


def test_rerun_skips_finished_images(raster_run, count_tiles):
    gpkg, tif, _ = raster_run
    tiles_stage(gpkg, raster=tif, size=64)
    assert count_tiles["calls"] == 6
    stamps = {p: p.stat().st_mtime_ns for p in (gpkg.parent / C.OVERHEAD_DIR).iterdir()}
    result = tiles_stage(gpkg, raster=tif, size=64)
    assert count_tiles["calls"] == 6  # nothing redone
    assert result.counts["ok"] == 6
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert read_stage_records(gpkg)["tiles"].counts["pending"] == 0


def test_corrupt_or_changed_files_are_made_again(raster_run, count_tiles):
    gpkg, tif, regions = raster_run
    tiles_stage(gpkg, raster=tif, size=64)
    first, second = (
        gpkg.parent / C.OVERHEAD_DIR / f"overhead_{r}.png" for r in regions.region_id[:2]
    )
    good = first.read_bytes()
    first.write_bytes(good[: len(good) // 2])  # truncated
    second.write_bytes(b"not a png at all")
    tiles_stage(gpkg, raster=tif, size=64)
    assert count_tiles["calls"] == 8
    assert first.read_bytes() == good
    images = _images(gpkg)
    for path in (first, second):
        assert images.loc[path.stem, C.SHA256] == sha256_file(path)


def test_interruption_keeps_what_was_saved_and_the_rerun_finishes(raster_run, count_tiles):
    gpkg, tif, _ = raster_run
    count_tiles["interrupt_at"] = 4
    with pytest.raises(KeyboardInterrupt):
        tiles_stage(gpkg, raster=tif, size=64)
    images = _images(gpkg)
    saved = int((images[C.STATUS] == C.STATUS_OK).sum())
    assert 1 <= saved <= 3  # (several threads read tiles: up to three were done)
    assert read_stage_records(gpkg)["tiles"].counts["pending"] == 6 - saved
    folder = gpkg.parent / C.OVERHEAD_DIR
    assert len(list(folder.glob("*.png"))) == saved
    assert not [p for p in folder.iterdir() if p.name.endswith(".part")]
    count_tiles["interrupt_at"] = None
    count_tiles["calls"] = 0
    result = tiles_stage(gpkg, raster=tif, size=64)
    assert count_tiles["calls"] == 6 - saved  # only the missing ones
    assert result.counts["ok"] == 6
    assert read_stage_records(gpkg)["tiles"].counts["pending"] == 0


def test_files_without_a_manifest_are_adopted_after_a_hard_crash(raster_run, count_tiles, tmp_path):
    gpkg, tif, regions = raster_run
    tiles_stage(gpkg, raster=tif, size=64)
    # A crash before the manifest was written: same files, a GeoPackage without the layer.
    fresh = tmp_path / "fresh.gpkg"
    write_layers(fresh, {C.LAYER_REGIONS: regions})
    os.replace(fresh, gpkg)
    assert C.LAYER_IMAGES not in list_layers(gpkg)
    broken = gpkg.parent / C.OVERHEAD_DIR / f"overhead_{regions.region_id[5]}.png"
    broken.write_bytes(broken.read_bytes()[:-40])
    result = tiles_stage(gpkg, raster=tif, size=64)
    assert count_tiles["calls"] == 6 + 1  # five adopted, the truncated one redone
    assert result.counts["ok"] == 6
    images = _images(gpkg)
    assert all(
        images[C.SHA256][i] == sha256_file(gpkg.parent / images[C.PATH][i]) for i in images.index
    )
    # Files made with other settings are not adopted (the settings ride in the PNG).
    write_layers(fresh, {C.LAYER_REGIONS: regions})
    os.replace(fresh, gpkg)
    tiles_stage(gpkg, raster=tif, size=64, resampling="nearest")
    assert count_tiles["calls"] == 7 + 6


def test_other_settings_need_overwrite(raster_run, count_tiles):
    gpkg, tif, _ = raster_run
    tiles_stage(gpkg, raster=tif, size=64)
    with pytest.raises(OutputError, match="size differ") as err:
        tiles_stage(gpkg, raster=tif, size=128)
    assert "--overwrite" in err.value.hint
    tiles_stage(gpkg, raster=tif, size=128, overwrite=True)
    assert count_tiles["calls"] == 12
    assert set(_images(gpkg)[C.WIDTH]) == {128}


def test_overhead_and_streetview_rows_live_side_by_side(raster_run, tmp_path):
    from tests.imagery.helpers import jpeg_bytes
    from urbangeo.imagery.stages import streetview_stage

    gpkg, tif, regions = raster_run
    sv = points([(X0 + 100, Y0 + 100)], [90.0], regions)
    write_layers(gpkg, {C.LAYER_SV_POINTS: sv}, overwrite=True)
    photos = tmp_path / "photos"
    photos.mkdir()
    lon, lat = sv[C.LON][0], sv[C.LAT][0]
    (photos / f"1_{lon:.6f},{lat:.6f}_202401_95.jpg").write_bytes(jpeg_bytes())
    tiles_stage(gpkg, raster=tif, size=32)
    streetview_stage(gpkg, folder=photos)
    tiles_stage(gpkg, raster=tif, size=32)
    kinds = read_layer(gpkg, C.LAYER_IMAGES)[C.KIND].value_counts().to_dict()
    assert kinds == {C.KIND_OVERHEAD: 6, C.KIND_STREETVIEW: 1}
    tiles_stage(gpkg, raster=tif, size=48, overwrite=True)
    images = read_layer(gpkg, C.LAYER_IMAGES)
    assert (images[C.KIND] == C.KIND_STREETVIEW).sum() == 1
    assert set(images[images[C.KIND] == C.KIND_OVERHEAD][C.WIDTH]) == {48}
    # Redoing tiles keeps the record of its sibling: streetview reads nothing tiles writes;
    # the street-view rows and files stay, and its next run keeps them.
    records = read_stage_records(gpkg)
    assert "tiles" in records and "streetview" in records
    result = streetview_stage(gpkg, folder=photos)
    assert result.counts["ok"] == 1 and "streetview" in read_stage_records(gpkg)
