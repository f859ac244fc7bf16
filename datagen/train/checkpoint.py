"""Stages as data, and checkpoints that say what they hold.

A checkpoint directory holds `datagen_checkpoint.json` (stage, projector, template, where the
untrained parts come from, LoRA settings), the LlavaConfig, the tokenizer, the image processor and
`model.safetensors` with the tensors it holds. Nothing is inferred from folder names.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, LlavaConfig, LlavaForConditionalGeneration

from datagen.errors import InputError

from .model import PARTS, TINY, build_base, image_processor_class, set_projector

log = logging.getLogger("datagen.train")
META = "datagen_checkpoint.json"
WEIGHTS = "model.safetensors"
# Stage -> the parts whose weights train; everything else is frozen.
STAGE_TRAINS = {"pretrain": ("projector",), "finetune": ("projector", "language_model")}
# LLaVA's LoRA targets every linear layer of the LLM (not the head, not the projector).
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


class CheckpointError(InputError, ValueError):
    """Unusable checkpoint path; the CLI prints it as one line and exits 2."""


def _in_part(name: str, part: str) -> bool:
    return any(p in name for p in PARTS[part])


def apply_stage(llava, stage: str, lora: dict | None = None):
    """Freeze all but the stage's parts; with LoRA the LLM trains through adapters only.
    Returns the model to train (a peft wrapper when LoRA is on)."""
    trains = STAGE_TRAINS[stage]
    model = llava
    for name, p in llava.named_parameters():
        p.requires_grad_(any(_in_part(name, part) for part in trains))
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(llava, LoraConfig(target_modules=LORA_TARGETS, **lora))
        for name, p in model.named_parameters():
            if _in_part(name, "projector"):
                p.requires_grad_(True)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    log.info("stage %s trains %s%s: %d of %d parameters", stage, "+".join(trains), " (LoRA)" if lora else "", n_train, n_all)
    return model


def held_state(model, meta: dict, state_dict: dict | None = None) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint stores: all of them when a part has no loadable source (tiny),
    otherwise only what trained. Tied duplicates are stored once."""
    state_dict = model.state_dict() if state_dict is None else state_dict
    if meta["base"] is not None:
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        state_dict = {k: v for k, v in state_dict.items() if k in trainable}
    out, seen = {}, set()
    for k, v in state_dict.items():
        if v.data_ptr() in seen and v.numel():
            continue
        seen.add(v.data_ptr())
        out[k] = v.detach().contiguous().cpu()
    return out


def save_checkpoint(out: str, model, tokenizer, image_processor, meta: dict, state_dict=None) -> None:
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    save_file(held_state(model, meta, state_dict), str(path / WEIGHTS), metadata={"format": "pt"})
    core.config.save_pretrained(path)
    tokenizer.save_pretrained(path)
    image_processor.save_pretrained(path)
    (path / META).write_text(json.dumps(meta, indent=2))


def read_meta(path: str) -> dict:
    meta_file = Path(path) / META
    if not meta_file.is_file():
        raise CheckpointError(
            f"{path}: not a datagen checkpoint (no {META}); pass the --out directory of `datagen train pretrain/finetune`"
        )
    return json.loads(meta_file.read_text())


def load_weights(model, path: str) -> None:
    """Load a checkpoint's tensors into a model built the same way; every stored tensor must land."""
    tensors = load_file(str(Path(path) / WEIGHTS))
    result = model.load_state_dict(tensors, strict=False)
    if result.unexpected_keys:
        raise CheckpointError(f"{path}: weights do not fit the model (e.g. {result.unexpected_keys[:3]})")
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    core.tie_weights()


def load_checkpoint(path: str, dtype=torch.float32):
    """Rebuild the model a checkpoint describes. Returns (model, tokenizer, image_processor, meta)."""
    meta = read_meta(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    processor = image_processor_class().from_pretrained(path)
    if meta["base"] is None:
        llava = LlavaForConditionalGeneration(LlavaConfig.from_pretrained(path)).to(dtype)
        set_projector(llava, meta["projector"])
    else:
        llava, _, _ = build_base(meta["base"]["vision_tower"], meta["base"]["llm"], meta["projector"], 0, dtype)
    model = llava
    if meta.get("lora"):
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(llava, LoraConfig(target_modules=LORA_TARGETS, **meta["lora"]))
    load_weights(model, path)
    return model, tokenizer, processor, meta


def new_meta(stage: str, sources: dict, projector: str, template: str, aspect: str, lora=None) -> dict:
    tiny = TINY in sources.values()
    return {
        "format": "datagen-llava-checkpoint",
        "version": 1,
        "stage": stage,
        "projector": projector,
        "template": template,
        "image_aspect": aspect,
        "sources": sources,
        # Where untrained weights load from; None = this checkpoint stores every tensor.
        "base": None if tiny else sources,
        "lora": lora,
    }
