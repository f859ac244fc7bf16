"""Shared, session-scoped fixtures: transformers is imported once and the tiny two-stage pipeline
runs once for all end-to-end tests."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="needs the [train] extra")
pytest.importorskip("transformers", reason="needs the [train] extra")
torch.set_num_threads(2)

from datagen.train import synthetic  # noqa: E402
from train_helpers import FAST, run_cli  # noqa: E402

@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """256 training images + 24 held-out ones, with stage-1 and stage-2 record files."""
    root = tmp_path_factory.mktemp("shapes")
    items = synthetic.make_shapes(root / "img", 256, seed=0)
    held_out = synthetic.make_shapes(root / "img", 24, seed=1, prefix="test")
    return {
        "root": root,
        "img": root / "img",
        "align": synthetic.write_json(synthetic.align_records(items), root / "align.json"),
        "instruct": synthetic.write_json(synthetic.instruct_records(items), root / "instruct.jsonl", jsonl=True),
        "held_out": held_out,
    }


@pytest.fixture(scope="session")
def pipeline(shapes):
    """pretrain -> finetune with tiny models through the CLI, as a user would run it."""
    root = shapes["root"]
    recipe = root / "recipe.yaml"
    # Tiny random models need a far larger step size than LLaVA's recipe for a 7B model.
    recipe.write_text("lr_scheduler: constant\nwarmup_ratio: 0.0\nbatch_size: 16\n")
    s1, s2 = root / "stage1", root / "stage2"
    run_cli("train", "pretrain", "--data", shapes["align"], "--image-folder", shapes["img"], "--vision-tower", "tiny",
            "--llm", "tiny", "--projector", "mlp2x_gelu", "--out", s1, "--config", recipe, "--max-steps", 20,
            "--lr", "3e-3", *FAST)
    run_cli("train", "finetune", "--data", shapes["instruct"], "--image-folder", shapes["img"], "--from", s1,
            "--out", s2, "--config", recipe, "--template", "chat", "--max-steps", 100, "--lr", "3e-3", *FAST)
    return {"stage1": s1, "stage2": s2}
