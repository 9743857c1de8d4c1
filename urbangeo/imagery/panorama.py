"""Perspective views cut from equirectangular (2:1) panoramas, vectorised with numpy.

An equirectangular panorama maps longitude around the camera to columns (the centre column
faces the panorama's own heading, ``pano_heading``; east is to the right) and latitude to rows
(the horizon in the middle). A perspective view of horizontal field of view ``fov`` looking at
compass ``heading`` is a pinhole image whose every pixel's ray is mapped back to a panorama
position and sampled bilinearly, for all pixels at once (no Python loop per pixel).
"""

from __future__ import annotations

import numpy as np

#: Width / height of an equirectangular panorama, and the tolerance for recognising one.
PANORAMA_RATIO = 2.0
RATIO_TOLERANCE = 0.02


def is_panorama(width: int, height: int) -> bool:
    """Whether an image of this size is an equirectangular (2:1) panorama."""
    return height > 0 and abs(width / height - PANORAMA_RATIO) <= RATIO_TOLERANCE * PANORAMA_RATIO


def view_rays(
    width: int, height: int, fov: float, heading: float, pitch: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Compass azimuth and elevation (degrees) of each pixel's ray in a perspective view."""
    focal = (width / 2) / np.tan(np.radians(fov) / 2)
    u = np.arange(width) + 0.5 - width / 2
    v = height / 2 - (np.arange(height) + 0.5)
    uu, vv = np.meshgrid(u, v)
    # Camera frame: x right, y up, z forward; tilt by pitch, then turn by heading.
    x, y, z = uu, vv, np.full_like(uu, focal)
    p = np.radians(pitch)
    y, z = y * np.cos(p) + z * np.sin(p), -y * np.sin(p) + z * np.cos(p)
    azimuth = (heading + np.degrees(np.arctan2(x, z))) % 360.0
    elevation = np.degrees(np.arctan2(y, np.hypot(x, z)))
    return azimuth, elevation


def perspective(
    pano: np.ndarray,
    *,
    heading: float,
    fov: float = 90.0,
    size: tuple[int, int] = (640, 640),
    pitch: float = 0.0,
    pano_heading: float = 0.0,
) -> np.ndarray:
    """A ``size`` = (width, height) perspective view of ``pano`` (H × W × C uint8).

    ``heading`` and ``pano_heading`` are compass degrees: the view's centre and the direction
    the panorama's centre column faces.
    """
    height_p, width_p = pano.shape[:2]
    azimuth, elevation = view_rays(size[0], size[1], fov, heading, pitch)
    col = (((azimuth - pano_heading) / 360.0 + 0.5) % 1.0) * width_p - 0.5
    row = (0.5 - elevation / 180.0) * height_p - 0.5
    row = np.clip(row, 0, height_p - 1)
    c0 = np.floor(col).astype(np.int64)
    r0 = np.floor(row).astype(np.int64)
    fc = (col - c0)[..., None]
    fr = (row - r0)[..., None]
    c0 %= width_p  # the seam wraps around
    c1 = (c0 + 1) % width_p
    r1 = np.minimum(r0 + 1, height_p - 1)
    img = pano if pano.ndim == 3 else pano[..., None]
    img = img.astype(np.float32)
    top = img[r0, c0] * (1 - fc) + img[r0, c1] * fc
    bottom = img[r1, c0] * (1 - fc) + img[r1, c1] * fc
    out = np.clip(np.rint(top * (1 - fr) + bottom * fr), 0, 255).astype(np.uint8)
    return out if pano.ndim == 3 else out[..., 0]
