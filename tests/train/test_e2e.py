"""The two stages end to end with tiny models: learning, freezing, export, chat."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from datagen.train.checkpoint import load_checkpoint
from datagen.train.infer import answer
from datagen.train.model import build_base
from datagen.train.synthetic import COLOUR_Q

from train_helpers import losses, run_cli

pytestmark = pytest.mark.train


def colour_accuracy(ckpt, shapes) -> float:
    model, tok, proc, meta = load_checkpoint(str(ckpt))
    model.eval()
    hits = [it["colour"] in answer(model, tok, proc, meta, shapes["img"] / it["image"], COLOUR_Q, 8).lower()
            for it in shapes["held_out"]]
    return sum(hits) / len(hits)


def test_loss_falls_in_both_stages(pipeline):
    # Stage 1 moves only the projector under a frozen random LM, so its drop is modest.
    s1, s2 = losses(pipeline["stage1"]), losses(pipeline["stage2"])
    assert s1[-1] < s1[0] - 0.3, s1
    assert s2[-1] < 0.3 * s2[0], s2


def test_trained_model_answers_held_out_colours(pipeline, shapes):
    # Four colours: chance is 25%. Stage 1 alone never saw a question and must not pass.
    assert colour_accuracy(pipeline["stage1"], shapes) < 0.3
    assert colour_accuracy(pipeline["stage2"], shapes) >= 0.6


def test_stage1_trains_only_projector_and_stage2_also_llm(pipeline):
    base, _, _ = build_base("tiny", "tiny", "mlp2x_gelu", seed=42)
    initial = base.state_dict()
    s1 = load_file(str(pipeline["stage1"] / "model.safetensors"))
    s2 = load_file(str(pipeline["stage2"] / "model.safetensors"))
    assert set(s1) == set(initial) == set(s2)

    def changed(a, b, prefix):
        return any(not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))

    assert changed(s1, initial, "model.multi_modal_projector.")
    assert not changed(s1, initial, "model.language_model.") and not changed(s1, initial, "lm_head.")
    assert not changed(s1, initial, "model.vision_tower.")
    assert changed(s2, s1, "model.multi_modal_projector.") and changed(s2, s1, "model.language_model.")
    assert not changed(s2, s1, "model.vision_tower.")


def test_export_hf_loads_in_transformers_and_generates(pipeline, shapes, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = tmp_path / "hf"
    run_cli("train", "export-hf", pipeline["stage2"], "--out", out)
    hf = AutoModelForImageTextToText.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    ours, tok, _, meta = load_checkpoint(str(pipeline["stage2"]))
    ours.eval()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, hf.state_dict()[key]), key
    from PIL import Image

    item = shapes["held_out"][0]
    image = Image.open(shapes["img"] / item["image"]).convert("RGB")
    prompt = tok.apply_chat_template([{"role": "user", "content": "<image>\n" + COLOUR_Q}], tokenize=False,
                                     add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt", add_special_tokens=False)
    assert (inputs["input_ids"] == hf.config.image_token_id).sum() == 16
    generated = hf.generate(**inputs, max_new_tokens=6, do_sample=False)
    text = processor.decode(generated[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.strip()


def test_chat_command_answers(pipeline, shapes):
    item = shapes["held_out"][1]
    result = run_cli("chat", pipeline["stage2"], COLOUR_Q, "--image", shapes["img"] / item["image"],
                     "--max-new-tokens", 8)
    assert result.output.strip()
