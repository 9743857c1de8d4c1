"""Perspective views cut from equirectangular panoramas."""

from __future__ import annotations

import numpy as np
import pytest

from urbangeo.imagery.panorama import is_panorama, perspective

W, H = 1440, 720  # 4 pixels per degree of longitude and latitude


def coded_panorama() -> np.ndarray:
    """Channel 0/1: column in units of 8 px (azimuth, 2 degrees); channel 2: row / 4."""
    rows, cols = np.mgrid[0:H, 0:W]
    return np.stack([cols // 8, (cols // 8) % 7, rows // 4], axis=-1).astype(np.uint8)


def test_is_panorama():
    assert is_panorama(4096, 2048) and is_panorama(2000, 999)
    assert not is_panorama(4096, 1536) and not is_panorama(640, 640)


@pytest.mark.parametrize("heading, pano_heading", [(0, 0), (90, 0), (250, 30), (10, 350)])
def test_view_looks_where_it_should(heading, pano_heading):
    pano = coded_panorama()
    size, fov = (201, 101), 90.0
    view = perspective(pano, heading=heading, fov=fov, size=size, pano_heading=pano_heading)
    assert view.shape == (101, 201, 3)
    focal = (size[0] / 2) / np.tan(np.radians(fov / 2))
    u = np.arange(size[0]) + 0.5 - size[0] / 2
    azimuth = heading + np.degrees(np.arctan(u / focal))
    # Expected panorama column of each pixel on the horizon row, then its code.
    col = ((((azimuth - pano_heading) / 360 + 0.5) % 1.0) * W).astype(int)
    middle = view[50].astype(int)
    # Bilinear blends neighbours across the 8-px code steps: allow one step off.
    diff = (middle[:, 0] - (col // 8) % 256) % 256
    at_seam = (col < 1) | (col > W - 2)  # blends the two ends of the panorama
    assert np.all(np.minimum(diff, 256 - diff)[~at_seam] <= 1)
    # The horizon is the middle row of the panorama; the view's centre pixel looks at it.
    assert abs(int(view[50, 100, 2]) - H // 2 // 4) <= 1
    # Up in the view is up in the panorama.
    assert view[0, 100, 2] < view[50, 100, 2] < view[100, 100, 2]


def test_fov_180_spans_half_the_panorama():
    pano = coded_panorama()
    view = perspective(pano, heading=180, fov=179.0, size=(400, 20), pano_heading=180)
    first, last = int(view[10, 0, 0]), int(view[10, -1, 0])
    # Columns 90 degrees either side of the centre: about W/4 and 3W/4, in 8-px codes.
    assert abs(first - (W // 4) // 8) <= 3 and abs(last - (3 * W // 4) // 8) <= 3


def test_grey_panoramas():
    pano = coded_panorama()[..., 0]
    view = perspective(pano, heading=0, size=(64, 32))
    assert view.shape == (32, 64)
