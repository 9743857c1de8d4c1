"""Divide-and-conquer refinement (UrbanLN): add verified local details to a long caption.

1. SAM (transformers ``SamModel``) segments the image from a grid of point prompts; each
   confident mask gives a box.
2. :func:`maximal_rectangles` reduces the overlap between the boxes: taken largest first, each
   box is replaced by the largest rectangle inside it that avoids the boxes already kept, and
   dropped if too little of it remains.
3. The same captioner writes a short local caption of each crop.
4. Visual phrases (``attribute object``) are parsed from the long and the local captions.
5. OWLv2 (transformers ``Owlv2ForObjectDetection``) scores each phrase on the image (the best
   box's probability); :func:`filter_phrases` drops those below 0.01.
6. The same captioner merges the kept phrases of the local captions into the long caption.

Every captioner call goes through the stage's cache, keyed by the crop's or image's hash and
the prompt, so a rerun pays for nothing twice.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from urbangeo._optional import import_optional
from urbangeo.captions.cache import CaptionCache, call_key
from urbangeo.captions.captioners import Captioner, CaptionError
from urbangeo.captions.prompts import Prompts
from urbangeo.errors import InputError
from urbangeo.io.files import sha256_bytes
from urbangeo.progress import progress

SAM_MODEL = "facebook/sam-vit-base"
OWL_MODEL = "google/owlv2-base-patch16-ensemble"
PHRASE_THRESHOLD = 0.01

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1 and y1 exclusive


# --- plain functions --------------------------------------------------------------------------
def largest_free_rectangle(free: np.ndarray) -> Box | None:
    """The largest all-True axis-aligned rectangle of a 2-d boolean array, as
    ``(x0, y0, x1, y1)`` with exclusive ends (None if there is no True cell).

    The classic row-by-row histogram method with a stack: O(rows x columns).
    """
    free = np.asarray(free, dtype=bool)
    if free.ndim != 2 or not free.any():
        return None
    rows, cols = free.shape
    heights = np.zeros(cols + 1, dtype=np.int64)  # a zero sentinel at the end
    best_area, best = 0, None
    for y in range(rows):
        heights[:cols] = np.where(free[y], heights[:cols] + 1, 0)
        stack: list[int] = []
        for x in range(cols + 1):
            while stack and heights[stack[-1]] >= heights[x]:
                top = stack.pop()
                height = int(heights[top])
                left = stack[-1] + 1 if stack else 0
                area = height * (x - left)
                if area > best_area:
                    best_area, best = area, (left, y - height + 1, x, y + 1)
            stack.append(x)
    return best


def maximal_rectangles(
    boxes: Sequence[Sequence[float]],
    image_size: tuple[int, int],
    *,
    min_keep: float = 0.5,
    min_side: int = 8,
    cell: int | None = None,
) -> list[Box]:
    """Boxes with their overlap removed, largest first.

    Each box (clipped to the image ``(width, height)``) is replaced by the largest rectangle
    inside it that does not overlap the boxes kept before it; it is kept if that rectangle
    retains at least ``min_keep`` of its area and both sides are ``min_side`` pixels or more.
    Work is done on a grid of ``cell``-pixel cells (default: the image's longer side / 256),
    so boxes are snapped to it.
    """
    width, height = int(image_size[0]), int(image_size[1])
    cell = cell or max(1, math.ceil(max(width, height) / 256))
    gw, gh = math.ceil(width / cell), math.ceil(height / cell)
    taken = np.zeros((gh, gw), dtype=bool)
    snapped = []
    for box in boxes:
        x0, y0, x1, y1 = (float(v) for v in box)
        gx0, gy0 = max(0, math.floor(x0 / cell)), max(0, math.floor(y0 / cell))
        gx1, gy1 = min(gw, math.ceil(x1 / cell)), min(gh, math.ceil(y1 / cell))
        if gx1 > gx0 and gy1 > gy0:
            snapped.append((gx0, gy0, gx1, gy1))
    snapped.sort(key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))
    kept: list[Box] = []
    for gx0, gy0, gx1, gy1 in snapped:
        area = (gx1 - gx0) * (gy1 - gy0)
        rect = largest_free_rectangle(~taken[gy0:gy1, gx0:gx1])
        if rect is None:
            continue
        rx0, ry0, rx1, ry1 = rect
        if (rx1 - rx0) * (ry1 - ry0) < min_keep * area:
            continue
        x0, y0 = (gx0 + rx0) * cell, (gy0 + ry0) * cell
        x1, y1 = min(width, (gx0 + rx1) * cell), min(height, (gy0 + ry1) * cell)
        if x1 - x0 < min_side or y1 - y0 < min_side:
            continue
        taken[gy0 + ry0 : gy0 + ry1, gx0 + rx0 : gx0 + rx1] = True
        kept.append((x0, y0, x1, y1))
    return kept


def filter_phrases(
    phrases: Sequence[str], scores: Sequence[float], threshold: float = PHRASE_THRESHOLD
) -> list[str]:
    """The phrases whose detection score is at least ``threshold`` (first occurrence kept)."""
    if len(phrases) != len(scores):
        raise ValueError("one score per phrase")
    out: list[str] = []
    for phrase, score in zip(phrases, scores, strict=True):
        if score >= threshold and phrase not in out:
            out.append(phrase)
    return out


def mask_boxes(masks: np.ndarray) -> list[Box]:
    """The bounding box of each non-empty boolean mask (``n x height x width``)."""
    out = []
    for mask in np.asarray(masks, dtype=bool):
        ys, xs = np.nonzero(mask)
        if len(xs):
            out.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    return out


def crop_bytes(image: Any, box: Box) -> bytes:
    """A PNG of ``box`` cut from a PIL image."""
    buf = io.BytesIO()
    image.crop(box).save(buf, "PNG")
    return buf.getvalue()


# --- models -----------------------------------------------------------------------------------
def _device(device: str | None) -> str:
    torch = import_optional("torch", extra="captions", purpose="Refinement")
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def _load(kind: str, name: str | os.PathLike, model_cls: str, processor_cls: str):
    transformers = import_optional("transformers", extra="captions", purpose=f"{kind} refinement")
    try:
        processor = getattr(transformers, processor_cls).from_pretrained(
            name, local_files_only=True
        )
        model = getattr(transformers, model_cls).from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"Cannot load the {kind} model '{name}': {exc}",
            hint=f"Give a local folder or a hub name already in the Hugging Face cache "
            f"(--{kind.lower()}-model).",
        ) from exc
    return processor, model


class SamBoxes:
    """Boxes of SAM's masks from a grid of ``points_per_side``² point prompts; masks with a
    predicted IoU below ``min_iou`` or covering less than ``min_area`` of the image are
    dropped."""

    def __init__(
        self,
        model: str | os.PathLike = SAM_MODEL,
        *,
        device: str | None = None,
        points_per_side: int = 8,
        min_iou: float = 0.7,
        min_area: float = 0.005,
    ) -> None:
        self.processor, self.model = _load("SAM", model, "SamModel", "SamProcessor")
        self.device = _device(device)
        self.model = self.model.to(self.device).eval()
        self.points_per_side = points_per_side
        self.min_iou = min_iou
        self.min_area = min_area

    def boxes(self, image: Any) -> list[Box]:
        """Boxes of the confident masks of a PIL image."""
        import torch

        width, height = image.size
        n = self.points_per_side
        points = [
            [[(i + 0.5) * width / n, (j + 0.5) * height / n]] for j in range(n) for i in range(n)
        ]
        inputs = self.processor(images=image, input_points=[points], return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.no_grad():
            out = self.model(**inputs, multimask_output=False)
        masks = self.processor.image_processor.post_process_masks(
            out.pred_masks.cpu(),
            inputs["original_sizes"].cpu(),
            inputs["reshaped_input_sizes"].cpu(),
        )[0][:, 0]
        iou = out.iou_scores.cpu()[0, :, 0].numpy()
        masks = masks.numpy()
        keep = (iou >= self.min_iou) & (masks.mean(axis=(1, 2)) >= self.min_area)
        return mask_boxes(masks[keep])


class OwlScorer:
    """OWLv2's score of each phrase on an image: the highest probability over its boxes."""

    def __init__(self, model: str | os.PathLike = OWL_MODEL, *, device: str | None = None) -> None:
        self.processor, self.model = _load(
            "OWL", model, "Owlv2ForObjectDetection", "Owlv2Processor"
        )
        self.device = _device(device)
        self.model = self.model.to(self.device).eval()

    def scores(self, image: Any, phrases: Sequence[str]) -> list[float]:
        """One score in [0, 1] per phrase."""
        if not phrases:
            return []
        import torch

        inputs = self.processor(
            text=[list(phrases)], images=image, return_tensors="pt", padding="max_length",
            truncation=True, max_length=16,
        )  # fmt: skip
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.no_grad():
            logits = self.model(**inputs).logits  # (1, boxes, phrases)
        return torch.sigmoid(logits[0]).amax(dim=0).cpu().tolist()


# --- the refinement ---------------------------------------------------------------------------
def _phrases(parser: Any, texts: Iterable[str]) -> list[str]:
    out: list[str] = []
    for text in texts:
        for phrase in parser.parse(text).phrases():
            if phrase not in out:
                out.append(phrase)
    return out


def refine_one(
    captioner: Captioner,
    call: Any,
    image: bytes,
    cache: CaptionCache,
    *,
    prompts: Prompts,
    sam: Any,
    owl: Any,
    parser: Any,
    max_crops: int = 6,
    threshold: float = PHRASE_THRESHOLD,
) -> str:
    """The refined caption of one (image, model) call whose long caption is ``call.caption``.

    When the merged caption replaces it, ``call.truncated`` says whether the merge was cut.
    """
    from PIL import Image

    item, model = call.item, call.model
    rgb = Image.open(io.BytesIO(image)).convert("RGB")
    boxes = maximal_rectangles(sam.boxes(rgb), rgb.size)[:max_crops]

    def cached(picture: bytes, prompt: str, role: str) -> dict | None:
        key = call_key(sha256_bytes(picture), captioner.name, model, prompt, captioner.options())
        record = cache.get(key)
        if record is not None:
            return record
        try:
            text = captioner.caption(picture, prompt, model, item)
        except CaptionError:
            return None
        return cache.put(key, text, image_id=item.image_id, kind=item.kind, role=role,
                         backend=captioner.name, model=model,
                         prompt_sha256=sha256_bytes(prompt.encode()))  # fmt: skip

    local_prompt = prompts.local.format(kind=item.kind)
    records = [cached(crop_bytes(rgb, b), local_prompt, "local") for b in boxes]
    locals_ = [r["caption"] for r in records if r and r["caption"]]
    long_phrases = set(_phrases(parser, [call.caption]))
    local_phrases = [p for p in _phrases(parser, locals_) if p not in long_phrases]
    kept = filter_phrases(local_phrases, owl.scores(rgb, local_phrases), threshold)
    if not kept:
        return call.caption
    details = "\n".join(f"- {p}" for p in kept)
    merge_prompt = prompts.merge.format(kind=item.kind, caption=call.caption, details=details)
    merged = cached(image, merge_prompt, "merge")
    if not merged or not merged["caption"]:
        return call.caption
    call.truncated = bool(merged.get("truncated"))
    return merged["caption"]


def refine_calls(
    captioner: Captioner,
    calls: Sequence[Any],
    images: dict[str, bytes | None],
    cache: CaptionCache,
    *,
    prompts: Prompts,
    concurrency: int = 4,
    sam_model: str | os.PathLike = SAM_MODEL,
    owl_model: str | os.PathLike = OWL_MODEL,
    sam: Any = None,
    owl: Any = None,
    parser: Any = None,
    device: str | None = None,
    max_crops: int = 6,
    threshold: float = PHRASE_THRESHOLD,
) -> None:
    """Refine each call's caption in place (see the module docstring)."""
    from urbangeo.captions.parse_cache import CachedParser
    from urbangeo.captions.scenegraph import RuleParser

    sam = sam or SamBoxes(sam_model, device=device)
    owl = owl or OwlScorer(owl_model, device=device)
    parser = parser or CachedParser(RuleParser())
    del concurrency  # the models run one image at a time; the captioner calls are cached
    with progress(len(calls), task="refine", unit="caption") as bar:
        for call in calls:
            image = images.get(call.item.image_id)
            if image is not None and call.caption:
                call.caption = refine_one(
                    captioner, call, image, cache, prompts=prompts, sam=sam, owl=owl,
                    parser=parser, max_crops=max_crops, threshold=threshold,
                )  # fmt: skip
            bar.update(1)
