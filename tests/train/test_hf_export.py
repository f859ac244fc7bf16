"""`datagen train export-hf` read back with stock transformers, 5.x here and 4.57 in a second
environment: the canonical llava-hf layout, the chat template, the image processor, the pipeline."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from datagen.train.checkpoint import load_checkpoint, new_meta, save_checkpoint
from datagen.train.data import IGNORE, VICUNA_SYSTEM, encode, expand_image_tokens, load_image, record_turns, render, tokenize_record
from datagen.train.model import build_base, num_image_tokens

from hf_probe import QUESTION, probe
from train_helpers import run_cli

pytestmark = pytest.mark.train
REPO = Path(__file__).resolve().parents[2]
TF4_PYTHON = REPO / ".venv-tf4" / "bin" / "python"
TEMPLATES = ("vicuna_v1", "plain", "chat")
RECORD = {"id": "r", "image": "a.png", "conversations": [
    {"from": "human", "value": "What colour is the shape?\n<image>"}, {"from": "gpt", "value": "Red."},
    {"from": "human", "value": "And its shape?"}, {"from": "gpt", "value": "A circle."}]}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Non-square images with detail near every edge, so a crop and a pad give different pixels; 301x500
    pads unevenly (99 + 100 columns), where processors have differed by a pixel."""
    root = tmp_path_factory.mktemp("images")
    paths = []
    for w, h in ((640, 480), (300, 500), (301, 500)):
        im = Image.linear_gradient("L").resize((w, h)).convert("RGB")
        im.paste((200, 30, 30), (0, 0, w // 5, h // 5))
        im.paste((30, 30, 200), (w - w // 5, h - h // 5, w, h))
        paths.append(root / f"im_{w}x{h}.png")
        im.save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, dict]:
    """One tiny random checkpoint per template (crop for `chat`, pad otherwise), exported by the CLI."""
    root = tmp_path_factory.mktemp("exports")
    llava, tok, proc = build_base("tiny", "tiny", "mlp2x_gelu", seed=0)
    out = {}
    for template in TEMPLATES:
        aspect = "crop" if template == "chat" else "pad"
        ckpt, hf = root / f"ckpt_{template}", root / f"hf_{template}"
        save_checkpoint(str(ckpt), llava, tok, proc,
                        new_meta("finetune", {"vision_tower": "tiny", "llm": "tiny"}, "mlp2x_gelu", template, aspect))
        run_cli("train", "export-hf", ckpt, "--out", hf)
        out[template] = {"ckpt": ckpt, "hf": hf, "aspect": aspect}
    return out


def parts(rec: dict) -> list[dict]:
    """The record as OpenAI-style messages with content parts (image part where <image> stood)."""
    from datagen.formats.messages import to_messages
    from datagen.formats.records import InstructRecord

    return to_messages(InstructRecord.model_validate(rec))["messages"]


def trainer_prompt(ckpt: Path, image: Path):
    """What `datagen chat` feeds the model: the trainer's own ids and pixels."""
    model, tok, proc, meta = load_checkpoint(str(ckpt))
    text, spans = render(meta["template"], [("user", "<image>\n" + QUESTION)], tok, generate=True)
    ids, _ = encode(meta["template"], text, spans, tok)
    ids, _ = expand_image_tokens(ids, ids, model.config.image_token_id, num_image_tokens(model.config))
    pixels = load_image(image, proc, meta["image_aspect"])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), pixel_values=pixels[None]).logits
    return ids, pixels, logits


def test_export_has_llava_hf_names_and_a_tokenizer_both_versions_know(exports):
    hf = exports["vicuna_v1"]["hf"]
    names = set(load_file(str(hf / "model.safetensors")))
    prefixes = ("vision_tower.vision_model.", "multi_modal_projector.", "language_model.model.", "language_model.lm_head.")
    assert all(n.startswith(prefixes) for n in names)
    assert all(any(n.startswith(p) for n in names) for p in prefixes)
    assert json.loads((hf / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert json.loads((hf / "config.json").read_text())["text_config"]["rope_theta"] == 10000.0


@pytest.mark.parametrize("template", TEMPLATES)
def test_transformers5_reads_the_legacy_layout_as_trained(exports, images, template):
    exp = exports[template]
    got = probe(str(exp["hf"]), [str(p) for p in images])
    assert got["missing"] == [] and got["unexpected"] == [] and got["mismatched"] == []
    for image, run in zip(images, got["runs"]):
        ids, pixels, logits = trainer_prompt(exp["ckpt"], image)
        assert run["input_ids"][0].tolist() == ids
        # The processor pads to a square with the mean colour (or centre-crops) exactly as training did.
        assert torch.equal(run["pixel_values"][0], pixels)
        assert torch.allclose(run["logits"], logits, atol=1e-5)


def tf4_probe(exports_dirs: list[Path], images: list[Path], out: Path) -> list[dict]:
    if not TF4_PYTHON.exists():
        if os.environ.get("DATAGEN_REQUIRE_TF4"):
            pytest.fail(f"{TF4_PYTHON} missing: `make setup-tf4` builds the transformers 4.57 environment")
        pytest.skip("no transformers 4.57 environment; `make setup-tf4` builds it (make test does)")
    results = []
    for k, export in enumerate(exports_dirs):
        result = out / f"probe{k}.pt"
        proc = subprocess.run([str(TF4_PYTHON), str(Path(__file__).parent / "hf_probe.py"), str(export), str(result),
                               *map(str, images)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.append(torch.load(result, weights_only=False))
    return results


def test_transformers4_57_loads_the_export_like_5(exports, images, tmp_path):
    chosen = [exports[t]["hf"] for t in ("vicuna_v1", "chat")]
    old = tf4_probe(chosen, images, tmp_path)
    for export, v4 in zip(chosen, old):
        v5 = probe(str(export), [str(p) for p in images])
        assert v4["version"].startswith("4.57") and v5["version"].startswith("5.")
        assert v4["missing"] == [] and v4["unexpected"] == [] and v4["mismatched"] == []
        assert v4["tokenizer_class"] == "PreTrainedTokenizerFast" and v4["image_processor_class"] == "LlavaImageProcessor"
        assert v4["prompt"] == v5["prompt"]
        for a, b in zip(v4["runs"], v5["runs"]):
            assert torch.equal(a["input_ids"], b["input_ids"])
            assert torch.equal(a["pixel_values"], b["pixel_values"])
            assert torch.allclose(a["logits"], b["logits"], atol=1e-5)


@pytest.mark.parametrize("template", TEMPLATES)
def test_chat_template_renders_the_training_format_token_for_token(exports, images, template):
    from transformers import AutoProcessor

    exp = exports[template]
    processor = AutoProcessor.from_pretrained(exp["hf"])
    _, tok, _, _ = load_checkpoint(str(exp["ckpt"]))
    rec = RECORD if template != "plain" else {**RECORD, "conversations": RECORD["conversations"][:2]}
    trained_ids, labels = tokenize_record(record_turns(rec), template, tok, tok.convert_tokens_to_ids("<image>"),
                                          n_image=16, max_length=4096)
    image = Image.open(images[0]).convert("RGB")
    string_messages = [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]}
                       for t in rec["conversations"]]
    for messages in (parts(rec), string_messages):
        text = processor.apply_chat_template(messages)
        assert processor(images=image, text=text, return_tensors="pt")["input_ids"][0].tolist() == trained_ids
    if template == "vicuna_v1":
        with_system = [{"role": "system", "content": VICUNA_SYSTEM}] + parts(rec)
        assert processor.apply_chat_template(with_system) == processor.apply_chat_template(parts(rec))
    # The {% generation %} marks cover exactly the tokens training puts loss on.
    enc = processor.tokenizer.apply_chat_template(string_messages, tokenize=True, return_dict=True,
                                                  return_assistant_tokens_mask=True)
    ids1, labels1 = tokenize_record(record_turns(rec), template, tok, tok.convert_tokens_to_ids("<image>"), 1, 4096)
    assert enc["input_ids"] == ids1
    assert enc["assistant_masks"] == [int(l != IGNORE) for l in labels1]


def test_image_text_to_text_pipeline_answers_chat_messages(exports, images):
    from transformers import pipeline

    pipe = pipeline("image-text-to-text", model=str(exports["vicuna_v1"]["hf"]))
    image = Image.open(images[1]).convert("RGB")
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]}]
    out = pipe(text=messages, max_new_tokens=5, do_sample=False)
    reply = out[0]["generated_text"]
    assert reply[-1]["role"] == "assistant" and isinstance(reply[-1]["content"], str) and reply[-1]["content"]


def test_trl_sft_trainer_takes_the_export_and_the_messages_format(exports, images, tmp_path):
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    hf = exports["vicuna_v1"]["hf"]
    rows = [{"images": [Image.open(p).convert("RGB")], "messages": parts(RECORD)} for p in images]
    model = LlavaForConditionalGeneration.from_pretrained(hf)
    before = model.model.multi_modal_projector.linear_1.weight.detach().clone()
    args = trl.SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=2, per_device_train_batch_size=2,
                         learning_rate=1e-2, report_to=[], save_strategy="no", logging_steps=1,
                         use_cpu=True, dataloader_num_workers=0, max_length=None)
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=AutoProcessor.from_pretrained(hf))
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(before, model.model.multi_modal_projector.linear_1.weight)
