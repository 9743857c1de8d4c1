"""Captions from a local vision-language model through Hugging Face transformers."""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from typing import Any

from urbangeo.captions.captioners.base import Captioner, CaptionError, ImageItem, check_image
from urbangeo.errors import InputError


class TransformersCaptioner(Captioner):
    """A local vision-language model through Hugging Face transformers.

    ``models`` are hub names (loaded from the local cache only: nothing is downloaded at run
    time unless ``local_files_only=False``) or folders written by ``save_pretrained``. Chat
    models (with a chat template) get the prompt with the image; plain captioning models
    (BLIP, GIT) caption without it. Calls run one at a time, on the GPU when there is one.
    """

    name = "transformers"
    thread_safe = False

    def __init__(
        self,
        models: Sequence[str],
        *,
        device: str | None = None,
        max_new_tokens: int = 256,
        local_files_only: bool = True,
        use_prompt: bool | None = None,
    ) -> None:
        if not models:
            raise InputError(
                "The transformers backend needs --model (a hub name or a local folder)."
            )
        super().__init__(models)
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.local_files_only = local_files_only
        self.use_prompt = use_prompt
        self._loaded: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def options(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "use_prompt": self.use_prompt}

    def _load(self, model: str) -> tuple[Any, Any]:
        if model in self._loaded:
            return self._loaded[model]
        from urbangeo._optional import import_optional

        transformers = import_optional(
            "transformers", extra="captions", purpose="The transformers caption backend"
        )
        torch = import_optional("torch", extra="captions", purpose="transformers")
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            processor = transformers.AutoProcessor.from_pretrained(
                model, local_files_only=self.local_files_only
            )
            net = transformers.AutoModelForImageTextToText.from_pretrained(
                model, local_files_only=self.local_files_only
            )
        except (OSError, ValueError) as exc:
            raise InputError(
                f"Cannot load the vision-language model '{model}': {exc}",
                hint="Give a local folder (save_pretrained) or a hub name already in the "
                "Hugging Face cache (huggingface-cli download NAME while online).",
            ) from exc
        net = net.to(device).eval()
        self._loaded[model] = (processor, net)
        return processor, net

    def caption(self, image: bytes | None, prompt: str, model: str, item: ImageItem) -> str:
        if image is None:
            raise CaptionError(f"image {item.image_id} has no file")
        check_image(image)
        from PIL import Image

        with self._lock:
            processor, net = self._load(model)
            import torch

            rgb = Image.open(io.BytesIO(image)).convert("RGB")
            template = getattr(processor, "chat_template", None)
            use_prompt = self.use_prompt if self.use_prompt is not None else bool(template)
            if use_prompt and template:
                messages = [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": prompt}],
                    }
                ]
                text = processor.apply_chat_template(messages, add_generation_prompt=True)
                inputs = processor(images=rgb, text=text, return_tensors="pt")
            elif use_prompt:
                inputs = processor(images=rgb, text=prompt, return_tensors="pt")
            else:
                inputs = processor(images=rgb, return_tensors="pt")
            inputs = {k: v.to(net.device) for k, v in inputs.items()}
            with torch.no_grad():
                out = net.generate(**inputs, max_new_tokens=self.max_new_tokens)
            if not net.config.is_encoder_decoder and "input_ids" in inputs:
                # Decoder-only models return the prompt tokens too.
                out = out[:, inputs["input_ids"].shape[1] :]
            tokenizer = getattr(processor, "tokenizer", processor)
            text = tokenizer.batch_decode(out, skip_special_tokens=True)[0]
        text = " ".join(text.split())
        if not text:
            raise CaptionError("the model returned an empty caption")
        return text

    def close(self) -> None:
        self._loaded.clear()
