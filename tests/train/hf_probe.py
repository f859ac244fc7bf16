"""Load an exported checkpoint with stock transformers only, as a user would, and record what it gives.

Imported by the tests (transformers 5.x) and run as a script by the transformers 4.57 environment
(`python hf_probe.py EXPORT OUT.pt IMAGE...`), so both versions run the very same steps. Uses only
APIs that 4.44+ and 5.x share, and nothing from datagen.
"""
from __future__ import annotations

import sys

QUESTION = "What colour is the shape?"


def probe(export: str, images: list[str]) -> dict:
    import torch
    import transformers
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model, info = LlavaForConditionalGeneration.from_pretrained(export, output_loading_info=True)
    model.eval()
    processor = AutoProcessor.from_pretrained(export)
    out = {
        "version": transformers.__version__,
        "missing": sorted(info["missing_keys"]),
        "unexpected": sorted(info["unexpected_keys"]),
        "mismatched": [str(m) for m in info.get("mismatched_keys", [])],
        "tokenizer_class": type(processor.tokenizer).__name__,
        "image_processor_class": type(processor.image_processor).__name__,
        "runs": [],
    }
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    for path in images:
        with Image.open(path) as im:
            image = im.convert("RGB")
        inputs = processor(images=image, text=prompt, return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits
        out["runs"].append({"input_ids": inputs["input_ids"], "pixel_values": inputs["pixel_values"], "logits": logits})
    out["prompt"] = prompt
    return out


if __name__ == "__main__":
    import torch

    export_dir, result_file, *image_files = sys.argv[1:]
    torch.save(probe(export_dir, image_files), result_file)
