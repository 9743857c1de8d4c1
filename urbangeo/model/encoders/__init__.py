"""Image encoders behind ``urbangeo embed --encoder``: the trained model and the baselines.

============  ==============================================================================
encoder       image features
============  ==============================================================================
trained       the image tower of a model from ``urbangeo train`` (this run's or any
              checkpoint: transfer between cities), L2-normalised
frozen-clip   an open_clip model without pre-training on captions (``pretrained`` tag or a
              local weights file), L2-normalised; random weights with a warning if neither
random        the same architecture, randomly initialised (seeded), L2-normalised
resnet18      torchvision ResNet-18 up to global average pooling (512 values), ImageNet
              weights from a local file, else random with a warning
image-stats   per-channel mean, standard deviation and an 8-bin histogram of the RGB pixels
              (3 + 3 + 24 = 30 values, each in [0, 1]), at full resolution
raster        (no images) an embedding raster (AlphaEarth, TESSERA, any) averaged over each
              region's pixels, with valid_share; see :mod:`.raster`
patches       (no images) patch vectors (points or polygons: Earth Index, Clay, Major TOM)
              averaged per region; see :mod:`.patches`
============  ==============================================================================

``geoclip-location`` (no images): GeoCLIP's pretrained location encoder at each region's
centroid, 512 values from the weights the geoclip wheel ships (extra ``location``); see
:mod:`.geoclip`. ``caption-text`` (no images read): each region's selected captions through the
run's trained text tower or all-MiniLM-L6-v2 (extra ``captions``), mean of unit vectors,
re-normalised; see :mod:`.caption_text`.

Each is an :class:`~urbangeo.model.encoders.base.ImageEncoder` in a module of its own,
registered in :data:`ENCODERS` by name; this package imports neither torch nor any of them
until one is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Unpack

from urbangeo._lazy import lazy_exports
from urbangeo._registry import Registry

if TYPE_CHECKING:
    from urbangeo.model.encoders.base import BuildOptions, ImageEncoder

_HERE = __name__

ENCODERS = Registry(
    "encoder",
    {
        "trained": f"{_HERE}.trained:TrainedEncoder",
        "frozen-clip": f"{_HERE}.frozen_clip:FrozenClipEncoder",
        "random": f"{_HERE}.random_clip:RandomClipEncoder",
        "resnet18": f"{_HERE}.resnet:ResNet18Encoder",
        "image-stats": f"{_HERE}.image_stats:ImageStatsEncoder",
        # region encoders: products aggregated to the regions, no images, no torch
        "raster": f"{_HERE}.raster:RasterProductEncoder",
        "patches": f"{_HERE}.patches:PatchEncoder",
        # pretrained location encoder at the region centroids (optional extra "location")
        "geoclip-location": f"{_HERE}.geoclip:GeoClipLocationEncoder",
        # the run's selected captions through a text model (trained text tower or MiniLM)
        "caption-text": f"{_HERE}.caption_text:CaptionTextEncoder",
    },
)


def build_encoder(encoder: str, **options: Unpack[BuildOptions]) -> ImageEncoder:
    """The encoder named ``encoder`` (one of :data:`ENCODERS`); see the package docstring.

    ``checkpoint``: trained weights (``trained``); ``model``: the architecture (CLIP
    encoders; default ViT-B-16); ``pretrained``: an open_clip tag and ``weights``: a local file
    (``frozen-clip``; ``weights`` is the ResNet-18 state dict for ``resnet18``).
    """
    implementation = ENCODERS.get(encoder)
    return implementation.build(**options)


#: Names imported from the implementations on first use.
__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ImageEncoder": ".base",
        "ClipEncoder": ".clip_tower",
        "ClipImageTower": ".clip_tower",
        "TrainedEncoder": ".trained",
        "default_checkpoint": ".trained",
        "trained_encoder": ".trained",
        "FrozenClipEncoder": ".frozen_clip",
        "RandomClipEncoder": ".random_clip",
        "ResNet18Encoder": ".resnet",
        "resnet18_encoder": ".resnet",
        "ImageStatsEncoder": ".image_stats",
        "image_statistics": ".image_stats",
        "image_stats_encoder": ".image_stats",
    },
    defined=["ENCODERS", "build_encoder"],
)
