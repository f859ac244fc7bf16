"""The hand-off to lmms-eval (MME, MMBench, SEED-Bench, MM-Vet): its `llava_hf` model, run on our `export-hf` folder
(docs/COMPARING_TEACHERS.md has the command), loads and asks it as replayed here, step by step, from lmms-eval's
lmms_eval/models/simple/llava_hf.py, with stock transformers and no download: AutoConfig's model_type picks
LlavaForConditionalGeneration, AutoProcessor comes from the folder with its tokenizer padding on the left, the
tokenizer's own chat template renders "<image>\\n" + the question as a string, and greedy generate answers. The test
checks that this sees the model we train and evaluate: the trainer's prompt, and `datagen eval`'s answer."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from datagen.eval.model import AnswerModel
from datagen.train.checkpoint import new_meta, save_checkpoint
from datagen.train.data import load_image, render
from datagen.train.model import build_base

from train_helpers import run_cli

pytestmark = pytest.mark.train
QUESTION = "What colour is the shape?"
MAX_NEW_TOKENS = 6


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A tiny random checkpoint in LLaVA-1.5's format (vicuna_v1, images padded to a square), exported by the CLI."""
    root = tmp_path_factory.mktemp("lmms")
    model, tokenizer, processor = build_base("tiny", "tiny", "mlp2x_gelu", seed=0)
    save_checkpoint(str(root / "ckpt"), model, tokenizer, processor,
                    new_meta("finetune", {"vision_tower": "tiny", "llm": "tiny"}, "mlp2x_gelu", "vicuna_v1", "pad"))
    run_cli("train", "export-hf", root / "ckpt", "--out", root / "hf")
    return root / "hf"


def test_llava_hf_loads_and_answers_as_datagen_does(export: Path, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration

    image_path = tmp_path / "shape.png"
    Image.linear_gradient("L").resize((300, 200)).convert("RGB").save(image_path)
    image = Image.open(image_path).convert("RGB")

    # LlavaHf.__init__: the config's model_type selects the class; the model and the processor come from the folder.
    # Its default device_map "" is refused by transformers 5 (a string must name a device), whatever the folder: the
    # documented command passes device_map=cuda, here its CPU twin.
    config = AutoConfig.from_pretrained(export)
    assert config.model_type == "llava"
    with pytest.raises(ValueError, match="device_map"):
        LlavaForConditionalGeneration.from_pretrained(export, device_map="")
    model = LlavaForConditionalGeneration.from_pretrained(
        export, revision="main", torch_dtype="auto", device_map="cpu", trust_remote_code=False, attn_implementation=None
    )
    processor = AutoProcessor.from_pretrained(export, revision="main", trust_remote_code=False)
    processor.tokenizer.padding_side = "left"
    tokenizer = processor.tokenizer
    # With a template of its own, lmms-eval never falls back to its built-in Vicuna one.
    assert tokenizer.chat_template

    # LlavaHf.generate_until: MME's questions carry no image token, so it is put first; the tokenizer renders the turn.
    context = "<image>\n" + QUESTION
    text = tokenizer.apply_chat_template([{"role": "user", "content": context}], tokenize=False, add_generation_prompt=True)
    trained, _ = render("vicuna_v1", [("user", context)], tokenizer, generate=True)
    assert text == trained  # the format the checkpoint was fine-tuned on

    inputs = processor(images=[image], text=text, return_tensors="pt")
    assert torch.equal(inputs["pixel_values"][0], load_image(image_path, processor.image_processor, "pad"))
    with torch.no_grad():
        output = model.generate(
            **inputs, do_sample=False, temperature=None, top_p=None, num_beams=1, max_new_tokens=MAX_NEW_TOKENS, use_cache=True,
            pad_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        )
    reply = tokenizer.batch_decode(output[:, inputs["input_ids"].shape[-1]:], skip_special_tokens=True)[0]

    # `datagen eval` on the same folder gives the same greedy answer (it strips surrounding spaces).
    ours = AnswerModel(export).answer([(image_path, QUESTION)], MAX_NEW_TOKENS)
    assert reply.strip() == ours[0]
