"""The transformers backend's plumbing with a tiny randomly initialised BLIP."""

from __future__ import annotations

import pytest

from tests.captions.helpers import TINY_TOWER, make_run, png_bytes, tiny_text_tower
from urbangeo import constants as C
from urbangeo.captions.captioners import CaptionError, ImageItem
from urbangeo.captions.captioners.transformers import TransformersCaptioner
from urbangeo.captions.stages import caption_stage
from urbangeo.errors import InputError

WORDS = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "a",
    "street",
    "with",
    "trees",
    "cars",
    "and",
    "buildings",
    "the",
    "road",
    "green",
    "red",
]


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory, transformers_ready):
    import torch
    import transformers as tf

    folder = tmp_path_factory.mktemp("tiny-blip")
    tokenizer = tf.BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})
    processor = tf.BlipProcessor(
        image_processor=tf.BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    config = tf.BlipConfig(
        text_config=tiny_text_tower(len(WORDS), 32, bos=2, sep=3, pad=0, eos=3),
        vision_config={**TINY_TOWER, "image_size": 32, "patch_size": 8, "projection_dim": 16},
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = tf.BlipForConditionalGeneration(config)
    with torch.no_grad():  # never emit special tokens, so the caption is not empty
        model.text_decoder.cls.predictions.bias[:5] = -1e4
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def test_tiny_blip_captions(tiny_blip):
    captioner = TransformersCaptioner([tiny_blip], max_new_tokens=6, device="cpu")
    text = captioner.caption(png_bytes(), "describe", tiny_blip, ImageItem("x", C.KIND_OVERHEAD))
    assert text and set(text.split()) <= set(WORDS[5:])
    with pytest.raises(CaptionError, match="decoded"):
        captioner.caption(b"junk", "describe", tiny_blip, ImageItem("x", C.KIND_OVERHEAD))


def test_stage_with_transformers(tiny_blip, tmp_path):
    gpkg = make_run(tmp_path, n_regions=2, n_points=0)
    result = caption_stage(
        gpkg, backend="transformers", models=[tiny_blip], max_tokens=5, select="first"
    )
    assert result.counts["captions"] == 2
    again = caption_stage(
        gpkg,
        backend="transformers",
        models=[tiny_blip],
        max_tokens=5,
        select="first",
        overwrite=True,
    )
    assert again.counts["cached"] == 2


def test_unknown_model(tmp_path, transformers_ready):
    captioner = TransformersCaptioner([str(tmp_path / "nowhere")])
    with pytest.raises(InputError, match="Cannot load"):
        captioner.caption(
            png_bytes(), "p", str(tmp_path / "nowhere"), ImageItem("x", C.KIND_OVERHEAD)
        )
