"""Answer a question about an image with a trained checkpoint (greedy decoding)."""
from __future__ import annotations

from pathlib import Path

import torch

from .data import IMAGE_TOKEN, encode, expand_image_tokens, load_image, render
from .model import num_image_tokens


def answer(model, tokenizer, image_processor, meta: dict, image: str | Path, question: str, max_new_tokens: int = 64) -> str:
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    question = IMAGE_TOKEN + "\n" + question.replace(IMAGE_TOKEN, "").strip()
    text, spans = render(meta["template"], [("user", question)], tokenizer, generate=True)
    ids, _ = encode(meta["template"], text, spans, tokenizer)
    ids, _ = expand_image_tokens(ids, ids, core.config.image_token_id, num_image_tokens(core.config))
    pixels = load_image(Path(image), image_processor, meta["image_aspect"])[None]
    input_ids = torch.tensor([ids], device=core.device)
    with torch.no_grad():
        out = core.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pixels.to(core.device, core.dtype),
            max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return tokenizer.decode(out[0, input_ids.shape[1]:], skip_special_tokens=True).strip()
