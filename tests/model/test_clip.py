"""create_model on tiny open_clip models: IPSI applied, 248-token forward, tokenizer, errors."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import open_clip.factory
import pytest
import torch
from PIL import Image

from urbangeo.errors import InputError
from urbangeo.model.clip import (
    TINY_MODEL_CONFIGS,
    ClipBundle,
    LongTokenizer,
    ModelConfigError,
    PretrainedWeightsError,
    create_model,
    extend_context_length,
    register_model_config,
    stretch_positional_embedding,
)

TINY = "urbangeo-tiny-vit"
SOT, EOT = 49406, 49407
LONG_CAPTION = " ".join(
    ["dense mid-rise residential blocks with shops on the ground floor and trees along the street"]
    * 30
)


@pytest.fixture(scope="module")
def long_bundle() -> ClipBundle:
    torch.manual_seed(0)
    bundle = create_model(TINY)
    bundle.model.eval()
    return bundle


def test_tiny_models_are_registered_and_survive_rescans(tmp_path: Path) -> None:
    for name in TINY_MODEL_CONFIGS:
        assert name in open_clip.list_models()
        assert open_clip.get_model_config(name)["text_cfg"]["context_length"] == 77
    # open_clip's public add_model_config rescans the registry; our entries must stay
    (tmp_path / "other-tiny.json").write_text(json.dumps(TINY_MODEL_CONFIGS[TINY]))
    open_clip.add_model_config(tmp_path)
    assert TINY in open_clip.list_models() and "other-tiny" in open_clip.list_models()
    open_clip.factory._MODEL_CONFIGS.pop("other-tiny", None)


def test_bundle_at_248(long_bundle: ClipBundle) -> None:
    model, _preprocess, tokenizer = long_bundle
    assert long_bundle.native_context_length == 77
    assert long_bundle.context_length == model.context_length == tokenizer.context_length == 248
    assert long_bundle.ipsi_ratio == 4 and long_bundle.ipsi_keep == 20
    assert model.positional_embedding.shape == (248, 64)
    assert model.positional_embedding.requires_grad
    expected_mask = torch.full((248, 248), float("-inf")).triu(1)
    assert torch.equal(model.attn_mask, expected_mask)
    assert "attn_mask" not in model.state_dict()  # still a non-persistent buffer
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 5_000_000


def test_urbanclip_mode_is_unchanged() -> None:
    bundle = create_model(TINY, context_length=77)
    assert bundle.ipsi_ratio == 1
    assert bundle.model.positional_embedding.shape[0] == 77
    assert bundle.model.attn_mask.shape == (77, 77)
    assert bundle.tokenizer("a street").shape == (1, 77)


def test_checkpoint_at_native_length_is_stretched_with_ipsi(tmp_path: Path) -> None:
    torch.manual_seed(1)
    native = create_model(TINY, context_length=77).model
    path = tmp_path / "native.pt"
    torch.save(native.state_dict(), path)

    stretched = create_model(TINY, checkpoint=path).model
    expected = stretch_positional_embedding(native.positional_embedding.detach())
    torch.testing.assert_close(stretched.positional_embedding.detach(), expected)
    assert torch.equal(stretched.token_embedding.weight, native.token_embedding.weight)
    assert torch.equal(stretched.visual.conv1.weight, native.visual.conv1.weight)

    # a checkpoint saved after stretching (e.g. after UrbanLN training) loads as is
    path248 = tmp_path / "stretched.pt"
    with torch.no_grad():
        stretched.positional_embedding[100] += 1.0
    torch.save({"state_dict": stretched.state_dict()}, path248)
    again = create_model(TINY, checkpoint=path248).model
    assert torch.equal(again.positional_embedding, stretched.positional_embedding)


def test_checkpoint_with_other_length_fails(tmp_path: Path) -> None:
    model134 = create_model(TINY, context_length=134).model  # 20 + 2 * 57
    assert model134.positional_embedding.shape[0] == 134
    path = tmp_path / "ctx134.pt"
    torch.save(model134.state_dict(), path)
    with pytest.raises(ModelConfigError, match="134 text positions"):
        create_model(TINY, checkpoint=path, context_length=248)


def test_forward_248_tokens(long_bundle: ClipBundle) -> None:
    model, preprocess, tokenizer = long_bundle
    tokens = tokenizer([LONG_CAPTION, "a park"])
    assert tokens.shape == (2, 248)
    with torch.no_grad():
        text = model.encode_text(tokens, normalize=True)
        image = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (80, 120, 3)))
        pixels = preprocess(Image.fromarray(image.numpy().astype(np.uint8))).unsqueeze(0)
        img = model.encode_image(pixels, normalize=True)
    assert text.shape == (2, 64) and torch.isfinite(text).all()
    assert pixels.shape == (1, 3, 64, 64)
    assert img.shape == (1, 64) and torch.isfinite(img).all()


def test_long_caption_truncated_with_eot_last(long_bundle: ClipBundle) -> None:
    tokenizer = long_bundle.tokenizer
    assert tokenizer.count_tokens(LONG_CAPTION) > 248
    tokens = tokenizer([LONG_CAPTION, "a park"])
    assert tokens[0, 0] == SOT and tokens[0, -1] == EOT
    assert (tokens[0] != 0).all() and (tokens[0] == EOT).sum() == 1
    assert int(tokens[0].argmax()) == 247  # the text tower pools here
    assert tokens[1, :4].tolist() == [SOT, *tokenizer.base.encode("a park"), EOT]
    assert (tokens[1, 4:] == 0).all()


def test_wrapper_forces_eot_when_base_tokenizer_does_not() -> None:
    def naive(texts: list[str], context_length: int) -> torch.Tensor:
        return torch.full((len(texts), context_length), 7, dtype=torch.long)

    naive.eot_token_id = 99  # type: ignore[attr-defined]
    tokens = LongTokenizer(naive, 5)(["x", "y"])
    assert tokens.tolist() == [[7, 7, 7, 7, 99]] * 2


def _encode(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_text(tokens)


def test_positions_beyond_77_are_used(long_bundle: ClipBundle) -> None:
    model, tokenizer = long_bundle.model, long_bundle.tokenizer
    tokens = tokenizer(LONG_CAPTION)
    base = _encode(model, tokens)
    changed = tokens.clone()
    changed[0, 200] = 320 if int(changed[0, 200]) != 320 else 321  # another word at position 200
    assert not torch.allclose(_encode(model, changed), base, atol=1e-6)

    # causal mask at the new size: with EOT at 150, a token at 200 cannot reach the pooled output
    gen = torch.Generator().manual_seed(3)
    short = torch.zeros(1, 248, dtype=torch.long)
    short[0, 0], short[0, 1:150], short[0, 150] = (
        SOT,
        torch.randint(1, 49000, (149,), generator=gen),
        EOT,
    )
    ref = _encode(model, short)
    after_eot = short.clone()
    after_eot[0, 200] = 320
    torch.testing.assert_close(_encode(model, after_eot), ref, rtol=0, atol=1e-6)
    before_eot = short.clone()
    before_eot[0, 120] = 320 if int(short[0, 120]) != 320 else 321
    assert not torch.allclose(_encode(model, before_eot), ref, atol=1e-6)


def test_stretched_positions_get_gradients(long_bundle: ClipBundle) -> None:
    model = long_bundle.model
    tokens = long_bundle.tokenizer(LONG_CAPTION)
    model.zero_grad()
    model.encode_text(tokens).sum().backward()
    grad = model.positional_embedding.grad
    assert grad is not None and grad[77:].abs().sum() > 0
    model.zero_grad()


def test_extend_context_length_on_existing_model() -> None:
    model = create_model(TINY, context_length=77).model
    old = model.positional_embedding.detach().clone()
    assert extend_context_length(model, 191, keep=20) == 3  # 20 + 3 * 57
    assert model.context_length == 191 and model.attn_mask.shape == (191, 191)
    torch.testing.assert_close(
        model.positional_embedding.detach(), stretch_positional_embedding(old, keep=20, ratio=3)
    )
    assert extend_context_length(model, 191) == 1  # already there: no-op


def test_unknown_architecture() -> None:
    with pytest.raises(ModelConfigError, match="Unknown model architecture") as err:
        create_model("urbangeo-tiny-vt")
    assert isinstance(err.value, ValueError)
    assert "urbangeo-tiny-vit" in str(err.value)  # suggests close names
    with pytest.raises(ValueError, match="ViT-B-16"):
        create_model("no-such-thing")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"context_length": 100}, "(?s)not reachable by IPSI.*248"),
        ({"context_length": 50}, "shorter than the model's native 77"),
        ({"context_length": 248.0}, "must be an integer"),
        ({"context_length": 248, "ipsi_keep": 77}, "ipsi_keep"),
        ({"context_length": 248, "ipsi_keep": 21}, "not reachable"),  # 227 / 56 is no integer
    ],
)
def test_bad_context_lengths(kwargs: dict, match: str) -> None:
    with pytest.raises(ModelConfigError, match=match):
        create_model(TINY, **kwargs)


def test_other_keep_gives_other_lengths() -> None:
    bundle = create_model(TINY, context_length=17 + 3 * 60, ipsi_keep=17)
    assert bundle.ipsi_ratio == 3 and bundle.model.positional_embedding.shape[0] == 197


def test_pretrained_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="Unknown pretrained tag"):
        create_model(TINY, pretrained="openai")
    with pytest.raises(ModelConfigError, match="not both"):
        create_model(TINY, pretrained="openai", checkpoint=tmp_path / "x.pt")
    with pytest.raises(InputError, match="not found"):
        create_model(TINY, checkpoint=tmp_path / "missing.pt")


def test_download_failure_names_offline_options(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> str:
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(PretrainedWeightsError, match="name resolution") as err:
        create_model("ViT-B-32", pretrained="openai")
    assert isinstance(err.value, RuntimeError)
    assert "--checkpoint FILE" in str(err.value) and "cache_dir" in str(err.value)


def test_custom_text_clip_is_stretched_too() -> None:
    config = copy.deepcopy(TINY_MODEL_CONFIGS[TINY])
    config["custom_text"] = True  # open_clip.CustomTextCLIP: the text tower lives in model.text
    register_model_config("urbangeo-test-custom-text", config)
    model = create_model("urbangeo-test-custom-text").model
    assert isinstance(model, open_clip.CustomTextCLIP)
    assert model.context_length == model.text.context_length == model.text.num_pos == 248
    assert model.text.positional_embedding.shape == (248, 64)
    assert model.text.attn_mask.shape == (248, 248)
    with torch.no_grad():
        assert model.encode_text(torch.randint(1, 49000, (2, 248))).shape == (2, 64)
    with pytest.raises(ValueError, match="lacks"):
        register_model_config("broken", {"embed_dim": 8})


def test_importing_the_package_stays_light() -> None:
    code = (
        "import sys, urbangeo.model as m; assert 'open_clip' not in sys.modules; "
        "m.FeatureQueue; assert 'open_clip' not in sys.modules; assert 'create_model' in dir(m)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
