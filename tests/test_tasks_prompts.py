"""Prompt packs (ours and LLaVA's layout), message assembly and instruction lists (datagen/tasks/prompts.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from datagen.errors import InputError
from datagen.tasks.prompts import BUNDLED_PROMPTS, build_messages, load_instructions
from datagen.source.coco import ImageAnnotations
from datagen.tasks.grounded import brief_probes, verify_pairs
from datagen.tasks.registry import TASKS, parse_answer, task_spec

# The shots' regions are normalised: the size only matters for a box written in pixels.
SHOT_IMAGE = ImageAnnotations(image_id=1, file_name="1.jpg", width=640, height=480, captions=["A shot."], caption_ids=[1], boxes=[])
BOX_LINE = re.compile(r"^[a-z ]+: \[(?:0|1)\.\d{1,3}(?:, (?:0|1)\.\d{1,3}){3}\]$")

@pytest.mark.parametrize("task", TASKS)
def test_bundled_packs_load_with_at_least_two_shots(task: str) -> None:
    pack = task_spec(task).load_pack(BUNDLED_PROMPTS)
    assert pack.task == task
    assert len(pack.shots) >= 2
    assert pack.system_message.strip()
    assert re.fullmatch(r"[0-9a-f]{16}", pack.sha256)
    for shot in pack.shots:
        assert shot.context.strip() and shot.response.strip()


@pytest.mark.parametrize("task", TASKS)
def test_bundled_shots_pass_our_own_validator(task: str) -> None:
    """A shot the validator would reject teaches the teacher to write rejects."""
    for shot in task_spec(task).load_pack(BUNDLED_PROMPTS).shots:
        content = parse_answer(task, shot.response, "stop")
        if task == "conversation":
            assert len(content) >= 2
        elif task == "complex_reasoning":
            assert len(content) == 1
        elif task_spec(task).planner is not None:  # a grounded task: one pair per planned question, each answer right
            assert not isinstance(content, str)
            probes = brief_probes(shot.context)
            assert probes
            verify_pairs(probes, content, SHOT_IMAGE)
        else:
            assert isinstance(content, str)


@pytest.mark.parametrize("task", ["detail", "complex_reasoning"])
def test_bundled_box_shots_use_the_context_format(task: str) -> None:
    for shot in task_spec(task).load_pack(BUNDLED_PROMPTS).shots:
        captions, blank, boxes = shot.context.strip().partition("\n\n")
        assert blank and captions.strip()
        for line in boxes.splitlines():
            assert BOX_LINE.match(line), line


def test_build_messages_order() -> None:
    pack = task_spec("conversation").load_pack(BUNDLED_PROMPTS)
    messages = build_messages(pack, "QUERY CONTEXT")
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * len(pack.shots) + ["user"]
    assert messages[0]["content"] == pack.system_message
    for index, shot in enumerate(pack.shots):
        assert messages[1 + 2 * index] == {"role": "user", "content": shot.context}
        assert messages[2 + 2 * index] == {"role": "assistant", "content": shot.response}
    assert messages[-1] == {"role": "user", "content": "QUERY CONTEXT"}


def test_llava_layout_loads_byte_for_byte_in_file_order(llava_prompts: Path) -> None:
    root = llava_prompts
    pack = task_spec("detail").load_pack(root)
    assert Path(pack.folder).name == "detail_description"
    system_bytes = (root / "detail_description" / "system_message.txt").read_bytes()
    assert b"\r\n" in system_bytes and system_bytes.endswith(b"\n")
    assert pack.system_message.encode("utf-8") == system_bytes  # \r\n inside and trailing \n kept
    conv = task_spec("conversation").load_pack(root)
    assert [shot.context for shot in conv.shots] == ["A dog in a park.", "A cat on a mat."]
    assert conv.shots[0].response.startswith("Question:\nWhat animal is it?\n===\nAnswer:\nA dog.")
    messages = build_messages(conv, "ctx")
    assert messages[0]["content"].encode("utf-8") == (root / "conversation" / "system_message.txt").read_bytes()


def test_ours_preferred_name_and_llava_name_both_accepted(llava_prompts: Path) -> None:
    root = llava_prompts
    ours = root / "detail"
    ours.mkdir()
    (ours / "system_message.txt").write_text("ours", encoding="utf-8")
    assert task_spec("detail").load_pack(root).system_message == "ours"


def test_missing_conv_partner(llava_prompts: Path) -> None:
    root = llava_prompts
    (root / "conversation" / "002_caps.txt").write_text("orphan", encoding="utf-8")
    with pytest.raises(InputError) as error:
        task_spec("conversation").load_pack(root)
    message = str(error.value)
    assert "002_caps.txt" in message and "002_conv.txt" in message and "\n" not in message


def test_missing_task_folder(llava_prompts: Path) -> None:
    root = llava_prompts
    (root / "complex_reasoning" / "000_caps.txt").unlink()
    (root / "complex_reasoning" / "000_conv.txt").unlink()
    (root / "complex_reasoning" / "system_message.txt").unlink()
    (root / "complex_reasoning").rmdir()
    with pytest.raises(InputError) as error:
        task_spec("complex_reasoning").load_pack(root)
    assert "complex_reasoning" in str(error.value) and str(root) in str(error.value)


def test_missing_root_and_missing_system_message(tmp_path: Path, llava_prompts: Path) -> None:
    with pytest.raises(InputError, match="folder not found"):
        task_spec("detail").load_pack(tmp_path / "absent")
    root = llava_prompts
    (root / "detail_description" / "system_message.txt").unlink()
    with pytest.raises(InputError, match="system_message.txt"):
        task_spec("detail").load_pack(root)


def test_pack_hash_changes_when_a_file_changes(llava_prompts: Path) -> None:
    root = llava_prompts
    before = task_spec("conversation").load_pack(root).sha256
    assert task_spec("conversation").load_pack(root).sha256 == before  # stable
    (root / "conversation" / "001_conv.txt").write_text("Question:\nQ?\n===\nAnswer:\nA.", encoding="utf-8")
    after_conv = task_spec("conversation").load_pack(root).sha256
    assert after_conv != before
    system = root / "conversation" / "system_message.txt"
    system.write_bytes(system.read_bytes() + b" ")
    assert task_spec("conversation").load_pack(root).sha256 not in (before, after_conv)


def test_pack_hash_changes_when_a_shot_is_added(llava_prompts: Path) -> None:
    root = llava_prompts
    before = task_spec("detail").load_pack(root).sha256
    (root / "detail_description" / "001_caps.txt").write_text("x", encoding="utf-8")
    (root / "detail_description" / "001_conv.txt").write_text("y", encoding="utf-8")
    assert task_spec("detail").load_pack(root).sha256 != before


@pytest.mark.parametrize("name", ["detail", "brief"])
def test_bundled_instruction_lists(name: str) -> None:
    instructions = load_instructions(name)
    assert len(instructions.lines) >= 10
    assert len(set(instructions.lines)) == len(instructions.lines)
    for line in instructions.lines:
        assert line == line.strip() and line and "<image>" not in line


def test_user_root_overrides_bundled_instructions(tmp_path: Path) -> None:
    (tmp_path / "instructions").mkdir()
    (tmp_path / "instructions" / "brief.txt").write_text("Say it short.\n\n  Tell me briefly.  \n", encoding="utf-8")
    assert load_instructions("brief", tmp_path).lines == ["Say it short.", "Tell me briefly."]
    # A root without the file falls back to ours.
    assert load_instructions("detail", tmp_path).lines == load_instructions("detail").lines
    assert load_instructions("brief", tmp_path).sha256 != load_instructions("brief").sha256


def test_empty_instruction_list_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "instructions").mkdir()
    (tmp_path / "instructions" / "detail.txt").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(InputError, match="empty"):
        load_instructions("detail", tmp_path)
