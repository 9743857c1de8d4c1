"""PNG files of the images: written fast with numpy and zlib, with text chunks recording the
settings an image was made with and its share of pixels with data, and read back checked."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

#: PNG text chunk holding the settings an image was made with (checked before a file on disk
#: without a manifest row is adopted).
PNG_SETTINGS_KEY = "urbangeo"
#: PNG text chunk holding the image's share of pixels with data (read back on adoption).
PNG_VALID_KEY = "urbangeo:valid_share"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _itxt(key: str, text: str) -> bytes:
    # iTXt: keyword, no compression, no language, no translated keyword, UTF-8 text.
    return _png_chunk(b"iTXt", key.encode() + b"\x00\x00\x00\x00\x00" + text.encode("utf-8"))


def encode_png(
    image: np.ndarray,
    *,
    settings: str = "",
    photographic: bool = True,
    valid_share: float | None = None,
) -> bytes:
    """PNG bytes of an (H, W) grey or (H, W, 3) RGB uint8 array, ``settings`` (and the
    ``valid_share``) in text chunks.

    Written with numpy and zlib rather than Pillow: every row gets the PNG "Up" filter
    (vectorised) and zlib level 1, with run-length matching for photographic images. On aerial
    imagery that is about five times faster than Pillow's per-row adaptive filtering, and the
    files are no larger; rendered maps use zlib's default matching, which suits flat colours.
    """
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels not in (1, 3):
        raise ValueError(f"encode_png takes grey or RGB images, not {channels} channels")
    raw = image.reshape(height, width * channels)
    rows = np.empty((height, width * channels + 1), dtype=np.uint8)
    rows[:, 0] = 2  # filter type Up: each byte minus the byte above it, modulo 256
    rows[0, 1:] = raw[0]
    np.subtract(raw[1:], raw[:-1], out=rows[1:, 1:])
    strategy = zlib.Z_RLE if photographic else zlib.Z_DEFAULT_STRATEGY
    packer = zlib.compressobj(1, zlib.DEFLATED, 15, 9, strategy)
    idat = packer.compress(rows.tobytes()) + packer.flush()
    colour_type = 0 if channels == 1 else 2
    parts = [
        b"\x89PNG\r\n\x1a\n",
        _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)),
    ]
    if settings:
        parts.append(_itxt(PNG_SETTINGS_KEY, settings))
    if valid_share is not None:
        parts.append(_itxt(PNG_VALID_KEY, repr(round(float(valid_share), 6))))
    parts += [_png_chunk(b"IDAT", idat), _png_chunk(b"IEND", b"")]
    return b"".join(parts)


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of encoded image bytes, decoding them fully (raises if corrupt)."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.size


def check_image_file(path: Path, *, settings: str | None = None) -> tuple[int, int] | None:
    """(width, height) if ``path`` is a complete, decodable image, else None.

    With ``settings``, a PNG must also carry the same settings text.
    """
    try:
        with Image.open(path) as im:
            im.load()  # verify() misses truncated pixel data; a full decode does not
            if settings is not None and getattr(im, "text", {}).get(PNG_SETTINGS_KEY) != settings:
                return None
            return im.size
    except Exception:
        return None


def png_valid_share(path: Path) -> float | None:
    """The share of image data a PNG urbangeo wrote records (None: none recorded)."""
    try:
        with Image.open(path) as im:
            text = getattr(im, "text", {}).get(PNG_VALID_KEY)
        return None if text is None else float(text)
    except Exception:
        return None
