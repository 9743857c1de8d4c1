"""Encoder ``geoclip-location``: GeoCLIP's pretrained location encoder at each region's centroid.

``urbangeo embed --encoder geoclip-location`` needs no images: each region's centroid (taken in
the grid's CRS, or its UTM zone when that is geographic, then converted to WGS84 latitude and
longitude) goes through the location encoder of GeoCLIP (Vivanco Cepeda et al., NeurIPS 2023,
MIT licence): an Equal Earth projection, random Fourier features at three scales and an MLP per
scale, summed into 512 values ``e0..e511``. These are the package's own outputs, not normalised
(GeoCLIP normalises them only to compare with images).

The weights are the file the PyPI wheel ships (``geoclip/model/weights/
location_encoder_weights.pth``, 38 MB), loaded with ``torch.load(weights_only=True)`` into the
package's ``LocationEncoder(from_pretrained=False)``: nothing is downloaded (GeoCLIP's image
encoder, whose CLIP ViT-L/14 comes from the Hugging Face Hub, is never built). Install with
``pip install 'urbangeo[location]'``; torch and geoclip are imported only when regions are
encoded.
"""

from __future__ import annotations

import functools
import importlib.metadata
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np

from urbangeo import constants as C
from urbangeo._optional import import_optional, package_folders
from urbangeo.errors import InputError, MissingExtraError
from urbangeo.io.files import sha256_file
from urbangeo.model.encoders.region_encoder import RegionEncoder, RegionVectors, vectors_frame
from urbangeo.progress import progress

if TYPE_CHECKING:
    import torch

    from urbangeo.settings import EmbedSettings

#: The optional extra that installs GeoCLIP.
EXTRA = "location"
#: The packaged weights, relative to the ``geoclip`` package folder.
WEIGHTS = ("model", "weights", "location_encoder_weights.pth")
DIM = 512
#: Locations per forward pass.
BATCH = 4096
TITLE = "GeoCLIP location encoder"
ATTRIBUTION = (
    "GeoCLIP location encoder (weights shipped with the geoclip package): V. Vivanco Cepeda, "
    "G. K. Nayak and M. Shah, GeoCLIP: Clip-Inspired Alignment between Locations and Images "
    "for Effective Worldwide Geo-localization, NeurIPS 2023 "
    "(https://github.com/VicenteVivan/geo-clip), MIT licence"
)
LICENCE = "MIT"


def weights_path() -> Path | None:
    """The packaged location-encoder weights, found without importing geoclip (None: the
    package or its weights file is not installed)."""
    for folder in package_folders("geoclip"):
        path = folder.joinpath(*WEIGHTS)
        if path.is_file():
            return path
    return None


def available() -> bool:
    """Whether the ``location`` extra is installed (the geoclip package and its weights)."""
    return weights_path() is not None


def missing_extra(purpose: str) -> MissingExtraError:
    """The error for a missing ``location`` extra."""
    return MissingExtraError(
        f"{purpose} needs the optional package 'geoclip' with its packaged weights, which is "
        "not installed.",
        hint=f"Install it with: pip install 'urbangeo[{EXTRA}]'",
    )


def require_weights(purpose: str) -> Path:
    """The packaged weights file, or :class:`MissingExtraError` naming the extra."""
    path = weights_path()
    if path is None:
        raise missing_extra(purpose)
    return path


@functools.lru_cache(maxsize=4)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def weights_sha256(path: Path) -> str:
    """The weights file's SHA-256 (computed once per file version and process)."""
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def geoclip_version() -> str | None:
    """The installed geoclip's version (None: not installed)."""
    try:
        return importlib.metadata.version("geoclip")
    except importlib.metadata.PackageNotFoundError:
        return None


def region_latlon(regions: gpd.GeoDataFrame) -> np.ndarray:
    """``[regions, 2]`` WGS84 latitude and longitude of each region's centroid (float64),
    taken in the layer's CRS (its UTM zone when the layer is geographic)."""
    if regions.crs is None:
        raise InputError("The regions layer has no CRS.", hint="Recreate it with grid.")
    if len(regions) == 0:
        return np.zeros((0, 2), dtype=np.float64)
    projected = regions if regions.crs.is_projected else regions.to_crs(regions.estimate_utm_crs())
    centroids = projected.geometry.centroid.to_crs(C.WGS84)
    latlon = np.column_stack([centroids.y.to_numpy(), centroids.x.to_numpy()]).astype(np.float64)
    bad = ~np.isfinite(latlon).all(axis=1)
    if bad.any():
        raise InputError(
            f"{int(bad.sum()):,} region(s) have no centroid (empty geometries).",
            hint="Recreate the grid, or drop the regions without a polygon.",
        )
    return latlon


def load_location_encoder(device: str | None = None) -> torch.nn.Module:
    """GeoCLIP's ``LocationEncoder`` with the packaged weights (read from disk, never
    downloaded), in evaluation mode on ``device`` (default: the GPU if any, else the CPU)."""
    purpose = "The GeoCLIP location encoder"
    path = require_weights(purpose)
    with warnings.catch_warnings():  # geoclip's module uses torch.jit.script (deprecated)
        warnings.simplefilter("ignore", FutureWarning)
        module = import_optional("geoclip.model.location_encoder", extra=EXTRA, purpose=purpose)
    import torch

    from urbangeo.model.data import pick_device

    model = module.LocationEncoder(from_pretrained=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.to(pick_device(device)).eval()


def encode_latlon(
    latlon: np.ndarray,
    *,
    model: torch.nn.Module | None = None,
    device: str | None = None,
    batch_size: int = BATCH,
) -> np.ndarray:
    """``[n, 512]`` float32 GeoCLIP location features of ``[n, 2]`` (latitude, longitude)."""
    latlon = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    if model is None:
        model = load_location_encoder(device)
    import torch

    from urbangeo.model.threads import use_threads

    use_threads(model)  # 9.4 M parameters: one thread unless OMP_NUM_THREADS says otherwise
    where = next(model.parameters()).device
    out = np.zeros((len(latlon), DIM), dtype=np.float32)
    starts = range(0, len(latlon), batch_size)
    with torch.inference_mode(), progress(len(starts), task="embed", unit="batch") as bar:
        for start in starts:
            batch = torch.tensor(latlon[start : start + batch_size], dtype=torch.float32)
            out[start : start + len(batch)] = model(batch.to(where)).float().cpu().numpy()
            bar.update(1)
    return out


class GeoClipLocationEncoder(RegionEncoder, name="geoclip-location"):
    """GeoCLIP's location features at each region's centroid; see the module docstring."""

    def __init__(self, *, device: str | None = None, batch_size: int = BATCH) -> None:
        self.weights = require_weights("--encoder geoclip-location")
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def from_settings(cls, s: EmbedSettings) -> GeoClipLocationEncoder:
        """``--device`` of the embed stage (the regions are encoded in batches of 4096)."""
        return cls(device=s.device)

    def encode(self, regions: gpd.GeoDataFrame) -> RegionVectors:
        """512 values per region from its centroid's latitude and longitude."""
        latlon = region_latlon(regions)
        model = load_location_encoder(self.device)
        vectors = encode_latlon(latlon, model=model, batch_size=self.batch_size)
        frame = vectors_frame(regions[C.REGION_ID].tolist(), vectors, {})
        abstract = (
            f"Region embeddings: GeoCLIP's pretrained location encoder ({DIM} values, "
            f"e0..e{DIM - 1}) at each region's centroid (WGS84 latitude and longitude); "
            "no images."
        )
        info: dict[str, Any] = {
            "encoder": self.name,
            "geoclip_version": geoclip_version(),
            "weights": "/".join(("geoclip", *WEIGHTS)),
            "weights_sha256": weights_sha256(self.weights),
            "location": "region centroid (projected CRS) in WGS84 lat/lon",
            "normalised": False,
        }
        counts = {"regions": len(frame), "dim": DIM}
        return RegionVectors(frame, DIM, (), TITLE, abstract, ATTRIBUTION, LICENCE, info, counts)
