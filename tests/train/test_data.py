"""Templates, loss masks, image-token expansion, skipping of bad records, sampling, collation."""
from __future__ import annotations

import json
import logging
import sys

import pytest
import torch

from datagen.train.data import (
    IGNORE, VICUNA_SYSTEM, Collator, DataError, LengthGroupedSampler, Skip, SupervisedDataset, load_records,
    record_turns, render, tokenize_record,
)
from datagen.train.model import build_tiny_tokenizer

TOK = build_tiny_tokenizer()
IMG = TOK.convert_tokens_to_ids("<image>")
RECORD = {"id": "r1", "image": "a.png", "conversations": [
    {"from": "human", "value": "What colour?\n<image>"}, {"from": "gpt", "value": "Red."},
    {"from": "human", "value": "Shape?"}, {"from": "gpt", "value": "A circle."}]}


def trained_text(ids, labels) -> list[str]:
    """The labelled tokens, decoded per contiguous run."""
    runs, cur = [], []
    for t, l in zip(ids, labels):
        if l != IGNORE:
            cur.append(t)
        elif cur:
            runs, cur = runs + [cur], []
    runs += [cur] if cur else []
    return [TOK.decode(r) for r in runs]


@pytest.mark.parametrize("template,text,answers", [
    ("vicuna_v1",
     f"<s>{VICUNA_SYSTEM} USER: <image>\nWhat colour? ASSISTANT: Red.</s>USER: Shape? ASSISTANT: A circle.</s>",
     [" Red.</s>", " A circle.</s>"]),
    ("chat", "<s>USER: <image>\nWhat colour? ASSISTANT: Red.</s>USER: Shape? ASSISTANT: A circle.</s>",
     [" Red.</s>", " A circle.</s>"]),
])
def test_golden_templates_and_loss_masks(template, text, answers):
    turns = record_turns(RECORD)
    assert render(template, turns, TOK)[0] == text
    ids, labels = tokenize_record(turns, template, TOK, IMG, n_image=1, max_length=4096)
    assert trained_text(ids, labels) == answers
    # Every labelled token is the token itself (no shift in the data; the model shifts).
    assert all(l in (IGNORE, t) for t, l in zip(ids, labels))


def test_plain_template_trains_on_caption_only():
    rec = {"id": "c", "image": "a.png", "conversations": [
        {"from": "human", "value": "Describe briefly.\n<image>"}, {"from": "gpt", "value": "A red circle."}]}
    turns = record_turns(rec)
    assert render("plain", turns, TOK)[0] == "<s><image>A red circle.\n"
    ids, labels = tokenize_record(turns, "plain", TOK, IMG, n_image=4, max_length=4096)
    assert trained_text(ids, labels) == ["A red circle.\n"]


def test_generation_prompt_is_the_training_prefix():
    turns = record_turns(RECORD)[:1]
    for template in ("vicuna_v1", "chat"):
        prompt, _ = render(template, turns, TOK, generate=True)
        full, _ = render(template, record_turns(RECORD), TOK)
        assert full.startswith(prompt) and prompt.endswith("ASSISTANT:")


def test_chat_template_skips_turns_holding_control_tokens():
    rec = {"id": "c", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "It ends with </s> here."}]}
    with pytest.raises(Skip) as literal:
        tokenize_record(record_turns(rec), "chat", TOK, IMG, n_image=1, max_length=4096)
    assert literal.value.kind == "control token in text" and "</s>" in str(literal.value)
    ids, _ = tokenize_record(record_turns(rec), "vicuna_v1", TOK, IMG, n_image=1, max_length=4096)
    assert ids.count(TOK.eos_token_id) == 1  # our own templates keep it as text instead


def test_image_token_expands_to_patch_count():
    turns = record_turns(RECORD)
    ids1, _ = tokenize_record(turns, "vicuna_v1", TOK, IMG, n_image=1, max_length=4096)
    ids16, labels16 = tokenize_record(turns, "vicuna_v1", TOK, IMG, n_image=16, max_length=4096)
    assert ids1.count(IMG) == 1 and ids16.count(IMG) == 16
    assert len(ids16) == len(ids1) + 15
    first = ids16.index(IMG)
    assert ids16[first:first + 16] == [IMG] * 16 and set(labels16[first:first + 16]) == {IGNORE}


def test_truncation_never_cuts_image_tokens_and_never_trains_on_nothing():
    turns = record_turns(RECORD)
    with pytest.raises(Skip) as cut_image:
        tokenize_record(turns, "chat", TOK, IMG, n_image=16, max_length=12)
    assert cut_image.value.kind == "too long for its image"
    with pytest.raises(Skip) as no_answer:
        tokenize_record(turns, "vicuna_v1", TOK, IMG, n_image=16, max_length=190)
    assert no_answer.value.kind == "no answer tokens"
    ids, labels = tokenize_record(turns, "vicuna_v1", TOK, IMG, n_image=16, max_length=215)
    assert len(ids) == 215 and trained_text(ids, labels) == [" Red.</s>"]


def write_image(path):
    from PIL import Image

    Image.new("RGB", (20, 12), (200, 10, 10)).save(path)


def test_bad_records_are_reported_by_id_and_counted(tmp_path, caplog):
    (tmp_path / "img").mkdir()
    write_image(tmp_path / "img" / "a.png")
    write_image(tmp_path / "outside.png")
    (tmp_path / "img" / "broken.png").write_bytes(b"not a png")
    good = dict(RECORD, id="good")
    records = [
        good,
        dict(RECORD, id="missing", image="nope.png"),
        dict(RECORD, id="escape", image="../outside.png"),
        dict(RECORD, id="broken", image="broken.png"),
        dict(RECORD, id="wrong-roles", conversations=[{"from": "gpt", "value": "hi"}, {"from": "human", "value": "x"}]),
        {"id": "text-only", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]},
        dict(RECORD, id="too-long", conversations=[{"from": "human", "value": "<image>\n" + "q" * 400},
                                                   {"from": "gpt", "value": "A."}]),
    ]
    from datagen.train.model import image_processor_for, tiny_vision_config

    proc = image_processor_for("tiny", tiny_vision_config())
    with caplog.at_level(logging.WARNING, logger="datagen.train"):
        ds = SupervisedDataset(records, tmp_path / "img", TOK, "vicuna_v1", IMG, 16, 300, proc)
        assert [e.id for e in ds.examples] == ["good", "broken", "text-only"]
        assert ds.skipped == {"missing image": 1, "image path escapes --image-folder": 1, "malformed record": 1,
                              "no answer tokens": 1}
        # The unreadable image is found when loaded: reported, counted, replaced by the next record.
        item = ds[1]
        assert "pixel_values" not in item and ds.skipped["unreadable image"] == 1
        assert ds[0]["pixel_values"].shape == (3, 64, 64)
    for rid in ("missing", "escape", "broken", "wrong-roles", "too-long"):
        assert f"record {rid} skipped" in caplog.text


def test_an_image_that_is_not_a_file_name_is_a_malformed_record(tmp_path):
    write_image(tmp_path / "a.png")
    records = [RECORD, dict(RECORD, id="number", image=5), dict(RECORD, id="list", image=["a.png"])]
    ds = SupervisedDataset(records, tmp_path, TOK, "vicuna_v1", IMG, 16, 300, None)
    assert [e.id for e in ds.examples] == ["r1"] and ds.skipped == {"malformed record": 2}


def test_an_image_bomb_is_refused_from_its_header_and_counted(tmp_path, caplog):
    from tests.test_teachers_image_bombs import write_png_bomb
    from datagen.train.model import image_processor_for, tiny_vision_config

    write_image(tmp_path / "a.png")
    write_png_bomb(tmp_path / "bomb.png")
    proc = image_processor_for("tiny", tiny_vision_config())
    ds = SupervisedDataset([dict(RECORD, id="bomb", image="bomb.png"), RECORD], tmp_path, TOK, "vicuna_v1", IMG, 16, 300, proc)
    with caplog.at_level(logging.WARNING, logger="datagen.train"):
        item = ds[0]  # the bomb is reported, counted and replaced by the next record
    assert item["pixel_values"].shape == (3, 64, 64) and ds.skipped == {"unreadable image": 1}
    assert "12000x12000 pixels, over the 50,000,000-pixel limit" in caplog.text


def test_the_loaders_peak_memory_on_a_bomb_stays_bounded(tmp_path):
    """Measured in a fresh process (ru_maxrss): the issue saw 2.3 GB for one such PNG."""
    from tests.test_teachers_image_bombs import PEAK_LIMIT_MB, peak_rss_mb, write_png_bomb

    write_png_bomb(tmp_path / "bomb.png")
    script = (
        "import sys; from pathlib import Path; from datagen.train.data import load_image\n"
        "try:\n    load_image(Path(sys.argv[1]), None, 'pad')\nexcept ValueError as error:\n    print('refused:', error)\n"
    )
    done, peak = peak_rss_mb([sys.executable, "-c", script, str(tmp_path / "bomb.png")])
    assert peak < PEAK_LIMIT_MB, peak
    assert done.returncode == 0 and "refused: 12000x12000 pixels" in done.stdout, done.stderr


def test_all_records_unusable_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no trainable records"):
        SupervisedDataset([dict(RECORD, image="nope.png")], tmp_path, TOK, "vicuna_v1", IMG, 16, 300, None)


def test_json_and_jsonl_load_the_same_records(tmp_path):
    records = [RECORD, dict(RECORD, id="r2")]
    (tmp_path / "a.json").write_text(json.dumps(records, indent=1))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert load_records(tmp_path / "a.json") == load_records(tmp_path / "a.jsonl") == records
    (tmp_path / "bad.json").write_text('[{"id": 1,')
    with pytest.raises(DataError, match="bad.json: broken JSON at line 1"):
        load_records(tmp_path / "bad.json")


def test_sampler_is_deterministic_and_groups_lengths():
    import random

    rng = random.Random(0)
    lengths = [rng.choice([rng.randint(80, 200), rng.randint(300, 1200)]) for _ in range(2000)]
    grouped = LengthGroupedSampler(lengths, batch_size=16, seed=3)
    batches = list(grouped)
    assert len(batches) == len(grouped) == 125 and all(len(b) == 16 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(2000)) and batches == list(grouped)
    grouped.set_epoch(1)
    assert list(grouped) != batches

    def efficiency(batches):
        return sum(lengths[i] for b in batches for i in b) / sum(max(lengths[i] for i in b) * len(b) for b in batches)

    assert efficiency(batches) >= 0.9 > efficiency(list(LengthGroupedSampler(lengths, 16, 3, group=False)))


def test_collator_mixes_text_only_and_image_records():
    items = [
        {"input_ids": torch.tensor([1, IMG, 5]), "labels": torch.tensor([IGNORE, IGNORE, 5]),
         "pixel_values": torch.zeros(3, 64, 64)},
        {"input_ids": torch.tensor([1, 7]), "labels": torch.tensor([IGNORE, 7])},
    ]
    batch = Collator(pad_id=TOK.pad_token_id)(items)
    assert batch["input_ids"].tolist() == [[1, IMG, 5], [1, 7, TOK.pad_token_id]]
    assert batch["labels"][1, 2] == IGNORE and batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["pixel_values"].shape == (1, 3, 64, 64)
