"""A trained model behind one call: greedy answers to (image or none, question) batches.

Loads our checkpoints (datagen/train/checkpoint.py) and any transformers LlavaForConditionalGeneration
folder (ours exported with `datagen train export-hf`, or a hub download), and prompts both the way the
trainer renders a user turn, so a model is asked in the form it was trained on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from datagen.errors import InputError

Item = TypeVar("Item")

CHECKPOINT_META = "datagen_checkpoint.json"


class AnswerModel:
    def __init__(self, path: Path, dtype: str = "auto", device: str | None = None) -> None:
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        if dtype not in ("float32", "bfloat16", "float16"):
            raise InputError(f"--dtype {dtype}: choose auto, float32, bfloat16 or float16")
        torch_dtype = getattr(torch, dtype)
        if (path / CHECKPOINT_META).is_file():
            self._load_ours(path, torch_dtype)
        elif _is_llava_folder(path):
            self._load_hf(path, torch_dtype)
        else:
            raise InputError(
                f"--model {path}: neither a datagen checkpoint ({CHECKPOINT_META}) nor a LlavaForConditionalGeneration "
                "folder (config.json); pass the --out of `datagen train finetune` or of `datagen train export-hf`"
            )
        self.model.to(self.device).eval()
        self.core = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def _load_ours(self, path: Path, dtype) -> None:
        from datagen.train.checkpoint import load_checkpoint

        self.model, self.tokenizer, self.image_processor, meta = load_checkpoint(str(path), dtype)
        self.template, self.aspect = meta["template"], meta["image_aspect"]

    def _load_hf(self, path: Path, dtype) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, LlavaForConditionalGeneration

        self.model = LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.image_processor = AutoImageProcessor.from_pretrained(path)
        # LLaVA-1.5 pads images to a square; without a chat template, Vicuna v1 is LLaVA's own format.
        self.template, self.aspect = ("chat" if self.tokenizer.chat_template else "vicuna_v1"), "pad"

    def _prompt_ids(self, question: str, with_image: bool) -> list[int]:
        from datagen.train.data import IMAGE_TOKEN, expand_image_tokens, render
        from datagen.train.model import num_image_tokens

        question = question.replace(IMAGE_TOKEN, "").strip()
        if with_image:
            question = IMAGE_TOKEN + "\n" + question
        text, _ = render(self.template, [("user", question)], self.tokenizer, generate=True)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if with_image:
            config = self.core.config
            extra = 1 if getattr(config, "vision_feature_select_strategy", "default") == "full" else 0
            ids, _ = expand_image_tokens(ids, ids, config.image_token_id, num_image_tokens(config) + extra)
        return ids

    def answer(self, batch: list[tuple[Path | None, str]], max_new_tokens: int) -> list[str]:
        """One greedy answer per (image path or None, question); a batch must be all-image or all-text."""
        import torch

        from datagen.train.data import load_image

        kinds = {image is not None for image, _ in batch}
        if len(kinds) != 1:
            raise ValueError("a batch mixes questions with and without images")
        sequences = [self._prompt_ids(question, image is not None) for image, question in batch]
        width = max(len(ids) for ids in sequences)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        # Left padding: every prompt ends where its answer starts, so one slice takes all the answers.
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in sequences], device=self.device)
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in sequences], device=self.device)
        extra = {}
        if kinds == {True}:
            pixels = torch.stack([load_image(image, self.image_processor, self.aspect) for image, _ in batch])
            extra["pixel_values"] = pixels.to(self.device, self.core.dtype)
        with torch.no_grad():
            output = self.core.generate(
                input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id, **extra,
            )
        return [text.strip() for text in self.tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)]


def _is_llava_folder(path: Path) -> bool:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return "LlavaForConditionalGeneration" in (config.get("architectures") or []) or config.get("model_type") == "llava"


def batches(items: list, batch_size: int, has_image) -> list[list]:
    """Consecutive runs of items of one kind (with or without an image), cut to batch_size."""
    groups: list[list] = []
    for item in items:
        if groups and len(groups[-1]) < batch_size and has_image(groups[-1][0]) == has_image(item):
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


@dataclass(frozen=True)
class EvalProgress:
    """What a person watching sees while a model answers an eval's questions: the two-line bar (`progress`, in a
    terminal) or, elsewhere, a plain `LABEL: DONE/TOTAL ...` line every `log_every` seconds; neither by default."""

    label: str = "eval"
    progress: bool = False
    log_every: float = 0.0


def answer_all(
    model: Any, items: list[Item], batch_size: int, has_image: Callable[[Item], bool], ask: Callable[[Item], tuple[Path | None, str]],
    max_new_tokens: int, shown: EvalProgress,
) -> Iterator[tuple[Item, str]]:
    """Each item with the model's greedy reply to `ask(item)` (image or None, question), batch by batch; the
    progress counts an item once the caller has taken (and written) its reply."""
    from datagen.run.progress import ProgressDisplay

    with ProgressDisplay(shown.label, len(items), None, [], enabled=shown.progress, log_every=shown.log_every) as display:
        for batch in batches(items, batch_size, has_image):
            for item, reply in zip(batch, model.answer([ask(item) for item in batch], max_new_tokens)):
                yield item, reply
                display.advance("written")
