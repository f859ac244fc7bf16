"""SmolLM2-135M-Instruct as the trainer's language model: real pretrained weights under a tiny random vision tower,
both stages through the CLI, then `export-hf` and `chat`."""

from __future__ import annotations

import json

import pytest

from datagen.train import synthetic
from real_helpers import datagen

torch = pytest.importorskip("torch", reason="needs the [train] extra")
pytestmark = [pytest.mark.real, pytest.mark.train, pytest.mark.slow]

STEPS = 8
# A short run: every step logged, and the loss compared over the first and last three.
COMMON = ["--max-steps", STEPS, "--batch-size", 4, "--logging-steps", 1, "--save-steps", 1000,
          "--num-workers", 0, "--no-gradient-checkpointing"]


def logged_losses(ckpt) -> list[float]:
    state = json.loads((ckpt / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


@pytest.fixture(scope="module")
def trained(smollm2, tmp_path_factory):
    root = tmp_path_factory.mktemp("smollm2-train")
    items = synthetic.make_shapes(root / "img", 32, seed=0)
    align = synthetic.write_json(synthetic.align_records(items), root / "align.json")
    instruct = synthetic.write_json(synthetic.instruct_records(items), root / "instruct.jsonl", jsonl=True)
    recipe = root / "recipe.yaml"
    recipe.write_text("lr_scheduler: constant\nwarmup_ratio: 0.0\n")
    s1, s2 = root / "stage1", root / "stage2"
    for args in (
        ["pretrain", "--data", align, "--llm", smollm2, "--vision-tower", "tiny", "--out", s1, "--lr", "1e-3"],
        ["finetune", "--data", instruct, "--from", s1, "--out", s2, "--template", "chat", "--lr", "5e-5"],
    ):
        result = datagen("train", *args, "--image-folder", root / "img", "--config", recipe, *COMMON)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return {"root": root, "items": items, "stage1": s1, "stage2": s2}


def test_both_stages_start_from_smollm2_and_the_loss_falls(trained, smollm2):
    from safetensors.torch import load_file

    for stage in ("stage1", "stage2"):
        losses = logged_losses(trained[stage])
        assert len(losses) == STEPS, losses
        assert sum(losses[-3:]) < sum(losses[:3]), (stage, losses)
    # Stage 1 trains only the projector: its language model is SmolLM2's own weights, unchanged.
    original = load_file(str(smollm2 / "model.safetensors"))
    stage1 = load_file(str(trained["stage1"] / "model.safetensors"))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(stage1[f"model.language_model.{name.removeprefix('model.')}"], original[name])


def test_export_hf_loads_and_chat_answers(trained, tmp_path):
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    out = tmp_path / "hf"
    exported = datagen("train", "export-hf", trained["stage2"], "--out", out)
    assert exported.returncode == 0, exported.stderr[-3000:]
    model = LlavaForConditionalGeneration.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    assert model.config.text_config.hidden_size == 576 and model.config.text_config.num_hidden_layers == 30  # SmolLM2-135M
    image = trained["root"] / "img" / trained["items"][0]["image"]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": synthetic.COLOUR_Q}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=Image.open(image).convert("RGB"), text=prompt, return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert processor.decode(generated[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    chat = datagen("chat", trained["stage2"], synthetic.COLOUR_Q, "--image", image, "--max-new-tokens", 8)
    assert chat.returncode == 0, chat.stderr[-3000:]
    assert chat.stdout.strip()
