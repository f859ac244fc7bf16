"""Export a checkpoint as a plain transformers LlavaForConditionalGeneration directory."""
from __future__ import annotations

from pathlib import Path

from transformers import LlavaProcessor

from .checkpoint import CheckpointError, load_checkpoint


def export_hf(ckpt: str, out: str) -> str:
    model, tokenizer, image_processor, meta = load_checkpoint(ckpt)
    if meta["projector"] != "mlp2x_gelu":
        raise CheckpointError(
            f"{ckpt}: projector {meta['projector']!r} has no LlavaForConditionalGeneration layout; "
            "export needs --projector mlp2x_gelu at pretrain"
        )
    if meta.get("lora"):
        model = model.merge_and_unload()
    Path(out).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=model.config.vision_config.patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )
    processor.save_pretrained(out)
    return out
