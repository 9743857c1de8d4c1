"""The folder provider: images located by name, EXIF or CSV, matched to sample points."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import ExifTags, Image

from tests.imagery.helpers import X0, Y0, grid, jpeg_bytes, make_run, points
from urbangeo import constants as C
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.imagery.coords import wgs84_to_bd09
from urbangeo.imagery.manifest import ImagesFailedError
from urbangeo.imagery.stages import streetview_stage
from urbangeo.io.files import sha256_file
from urbangeo.io.gpkg import read_layer


@pytest.fixture
def run(tmp_path):
    regions = grid(3, 1)
    sv = points(
        [(X0 + 100, Y0 + 100), (X0 + 1500, Y0 + 500), (X0 + 2500, Y0 + 900)],
        [10.0, 95.0, 200.0],
        regions,
    )
    return make_run(tmp_path, regions, sv), sv


def exif_gps(lon: float, lat: float, heading: float | None = None) -> Image.Exif:
    def dms(value: float) -> tuple[float, float, float]:
        value = abs(value)
        d = int(value)
        m = int((value - d) * 60)
        return (float(d), float(m), (value - d - m / 60) * 3600)

    exif = Image.Exif()
    gps = {
        ExifTags.GPS.GPSLatitudeRef: "N" if lat >= 0 else "S",
        ExifTags.GPS.GPSLatitude: dms(lat),
        ExifTags.GPS.GPSLongitudeRef: "E" if lon >= 0 else "W",
        ExifTags.GPS.GPSLongitude: dms(lon),
    }
    if heading is not None:
        gps[ExifTags.GPS.GPSImgDirectionRef] = "T"
        gps[ExifTags.GPS.GPSImgDirection] = heading
    exif[0x8825] = gps
    return exif


def offset(sv, i, east=0.0, north=0.0):
    """lon, lat of a spot ``east``/``north`` metres from point ``i`` (small offsets)."""
    lat = sv[C.LAT][i]
    return (
        sv[C.LON][i] + east / (111_320 * np.cos(np.radians(lat))),
        lat + north / 111_320,
    )


def _images(gpkg):
    return read_layer(gpkg, C.LAYER_IMAGES).set_index(C.IMAGE_ID)


def test_names_and_exif_locate_images(run, tmp_path):
    gpkg, sv = run
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    lon, lat = offset(sv, 0, east=8)
    (folder / f"10244_{lon:.6f},{lat:.6f}_202212_166.62.jpg").write_bytes(jpeg_bytes((200, 0, 0)))
    lon, lat = offset(sv, 1, north=-12)
    exif = exif_gps(lon, lat, heading=271.4)
    (folder / "sub" / "DSC0001.jpg").write_bytes(jpeg_bytes((0, 200, 0), exif=exif))
    lon, lat = offset(sv, 2, east=80)  # too far from every point
    (folder / f"9_{lon:.6f},{lat:.6f}_202212_10.jpg").write_bytes(jpeg_bytes())
    result = streetview_stage(gpkg, folder=folder, radius=30)
    assert result.counts == {"ok": 2, "missing": 1, "failed": 0}
    images = _images(gpkg)
    first = images.loc["sv_0_167"]
    assert first[C.KIND] == C.KIND_STREETVIEW and first[C.POINT_ID] == 0
    assert first[C.REGION_ID] == sv[C.REGION_ID][0]
    assert first[C.SOURCE].startswith("folder:10244_")
    assert first[C.PATH] == "images/streetview/sv_0_167.jpg"
    assert (tmp_path / first[C.PATH]).read_bytes() == next(folder.glob("10244_*")).read_bytes()
    assert first.geometry.equals(sv.geometry[0])
    second = images.loc["sv_1_271"]
    assert second[C.SOURCE] == "folder:sub/DSC0001.jpg"
    assert second[C.SHA256] == sha256_file(tmp_path / second[C.PATH])
    assert (second[C.WIDTH], second[C.HEIGHT]) == (64, 32)
    missing = images.loc["sv_2_200"]  # the point's road heading
    assert missing[C.STATUS] == C.STATUS_MISSING and "within 30 m" in missing[C.REASON]
    assert pd.isna(missing[C.PATH])


def test_csv_and_chinese_datums(run, tmp_path):
    gpkg, sv = run
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "a.png").write_bytes(_png())
    lon, lat = offset(sv, 2, north=5)
    (folder / "locations.csv").write_text(f"image,lon,lat,heading\na.png,{lon},{lat},45\n")
    streetview_stage(gpkg, folder=folder, csv=folder / "locations.csv")
    assert _images(gpkg).loc["sv_2_45", C.PATH] == "images/streetview/sv_2_45.png"
    # Names in BD-09 (Baidu) coordinates are converted back with --coords bd09.
    bd = tmp_path / "bd"
    bd.mkdir()
    lon, lat = wgs84_to_bd09(*offset(sv, 1, east=3))
    (bd / f"77_{float(lon):.7f},{float(lat):.7f}_202003_303.78.jpg").write_bytes(jpeg_bytes())
    with pytest.raises(InputError, match="within 30 m"):
        streetview_stage(gpkg, folder=bd, overwrite=True)  # read as WGS84: hundreds of m off
    streetview_stage(gpkg, folder=bd, coords="bd09", overwrite=True)
    assert _images(gpkg).loc["sv_1_304", C.STATUS] == C.STATUS_OK


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()


def test_panoramas_are_cut_into_views(run, tmp_path):
    gpkg, sv = run
    folder = tmp_path / "panos"
    # A panorama whose red channel is the azimuth column (relative to its centre, north).
    cols = np.arange(720)
    pano = np.zeros((360, 720, 3), dtype=np.uint8)
    pano[..., 0] = (cols * 255 // 719)[None, :]
    sub = folder / f"7126_{sv[C.LON][1]:.7f},{sv[C.LAT][1]:.7f}"  # located by its folder
    sub.mkdir(parents=True)
    buffer = io.BytesIO()
    Image.fromarray(pano).save(buffer, "PNG")
    (sub / "pano_0.png").write_bytes(buffer.getvalue())
    # Three views (not four: the view looking back would stare at the panorama's seam).
    result = streetview_stage(gpkg, folder=folder, panorama_views=3, size=(64, 48))
    assert result.counts["ok"] == 3
    images = _images(gpkg)
    road = 95.0
    for k in range(3):
        heading = (road + 120 * k) % 360
        row = images.loc[f"sv_1_{round(heading) % 360}"]
        with Image.open(tmp_path / row[C.PATH]) as im:
            assert im.size == (64, 48) and im.format == "JPEG"
            red = int(np.asarray(im)[24, 32, 0])
        # No heading known: the panorama's centre column is taken to face the road.
        column = ((heading - road) / 360 + 0.5) % 1.0 * 720
        assert abs(red - column * 255 / 719) <= 6


def test_unreadable_images_warn_or_fail(run, tmp_path):
    gpkg, sv = run
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "x_1.0,2.0_202001_3.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(InputError, match=r"None of the 1 image files .* can be read"):
        streetview_stage(gpkg, folder=folder)
    lon, lat = offset(sv, 0)
    (folder / f"1_{lon:.6f},{lat:.6f}_202001_3.jpg").write_bytes(jpeg_bytes())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = streetview_stage(gpkg, folder=folder)
    assert any(
        issubclass(w.category, UrbangeoWarning) and "cannot be read" in str(w.message)
        for w in caught
    )
    assert result.counts["ok"] == 1


def test_truncated_image_is_a_failed_row(run, tmp_path):
    gpkg, sv = run
    folder = tmp_path / "trunc"
    folder.mkdir()
    lon, lat = offset(sv, 0)
    data = jpeg_bytes(size=(256, 256))
    (folder / f"1_{lon:.6f},{lat:.6f}_202001_3.jpg").write_bytes(data[: len(data) // 2])
    # The only image failed and none succeeded: an error, with the failed row written.
    failed = r"No streetview image could be made: 1 failed; the most common reason"
    with pytest.raises(ImagesFailedError, match=failed) as err:
        streetview_stage(gpkg, folder=folder)
    assert "unreadable image" in err.value.message
    assert "unreadable image" in _images(gpkg).loc["sv_0_3", C.REASON]


def test_folder_far_from_every_point(run, tmp_path):
    gpkg, sv = run
    folder = tmp_path / "far"
    folder.mkdir()
    lon, lat = offset(sv, 0, north=5000)
    (folder / f"1_{lon:.6f},{lat:.6f}.jpg").write_bytes(jpeg_bytes())
    with pytest.raises(InputError, match="within 30 m of a sample point") as err:
        streetview_stage(gpkg, folder=folder)
    assert "closest is 4," in str(err.value) and "--radius" in err.value.hint


def test_folder_without_locations_or_images(run, tmp_path):
    gpkg, _ = run
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="No images in"):
        streetview_stage(gpkg, folder=empty)
    (empty / "plain.jpg").write_bytes(jpeg_bytes())
    with pytest.raises(InputError, match="has a location") as err:
        streetview_stage(gpkg, folder=empty)
    assert "--csv" in err.value.hint
    with pytest.raises(InputError, match="needs a folder"):
        streetview_stage(gpkg)


def test_xmp_gps_as_written_by_photo_editors(run, tmp_path):
    gpkg, sv = run
    lon, lat = offset(sv, 2, north=4)

    def dm(value: float, pos: str, neg: str) -> str:
        d = int(abs(value))
        return f"{d},{(abs(value) - d) * 60:.6f}{pos if value >= 0 else neg}"

    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
        f'exif:GPSLatitude="{dm(lat, "N", "S")}" exif:GPSLongitude="{dm(lon, "E", "W")}" '
        'exif:GPSImgDirection="1763/10"/></rdf:RDF></x:xmpmeta>'
    ).encode()
    folder = tmp_path / "xmp"
    folder.mkdir()
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), (5, 6, 7)).save(buffer, "JPEG", xmp=xmp)
    (folder / "edited.jpg").write_bytes(buffer.getvalue())
    result = streetview_stage(gpkg, folder=folder)
    assert result.counts["ok"] == 1
    assert _images(gpkg).loc["sv_2_176", C.SOURCE] == "folder:edited.jpg"
