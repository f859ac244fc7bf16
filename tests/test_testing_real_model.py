"""The real-model tier's set-up helpers, without the model: what a machine that has not run `make setup-real` sees."""

from __future__ import annotations

import json

import pytest

from datagen.testing import real_model


def test_a_folder_without_a_matching_stamp_is_not_built_and_names_the_fix(tmp_path, monkeypatch):
    with pytest.raises(real_model.RealModelMissing, match="make setup-real"):
        real_model.require_built(tmp_path / "nothing")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / real_model.STAMP).write_text(json.dumps({"gguf": "other.gguf"}))
    monkeypatch.setattr(real_model, "gguf_file", lambda: tmp_path / "x.gguf")
    (tmp_path / "x.gguf").write_bytes(b"12")
    assert not real_model.is_built(folder)  # built from another file (or transformers): rebuilt by make setup-real


def test_without_the_package_the_build_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(real_model, "DISTRIBUTION", "datagen-no-such-package")
    assert real_model.main([str(tmp_path / "model")]) == 2
    assert capsys.readouterr().err.strip() == "error: the datagen-no-such-package package is not installed; run `make setup-real`"
    assert not (tmp_path / "model").exists()
