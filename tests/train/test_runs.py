"""Short training runs: exact resume, the feature cache, LoRA, the linear projector, torchrun."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import datagen.train.cache as cache_module
import datagen.train.model as model_module
from train_helpers import FAST, losses, run_cli

pytestmark = pytest.mark.train
REPO = Path(__file__).resolve().parents[2]


def stage2(shapes, pipeline, out, *extra, expect: int = 0):
    return run_cli("train", "finetune", "--data", shapes["instruct"], "--image-folder", shapes["img"],
                   "--from", pipeline["stage1"], "--out", out, "--batch-size", 4, "--lr", "1e-3", *FAST, *extra, expect=expect)


def test_resume_from_mid_run_checkpoint_matches_uninterrupted_run(shapes, pipeline, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    stage2(shapes, pipeline, full, "--max-steps", 6, "--save-steps", 3)
    mid = full / "checkpoint-3"
    assert (mid / "datagen_checkpoint.json").is_file() and (mid / "optimizer.pt").is_file()
    stage2(shapes, pipeline, resumed, "--max-steps", 6, "--resume", mid)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # ...and the run really moved after the checkpoint, so equality is not trivial.
    assert not torch.equal(load_file(str(mid / "model.safetensors"))["lm_head.weight"], a["lm_head.weight"])


def test_feature_cache_is_built_once_and_stage1_then_skips_the_vision_tower(shapes, pipeline, tmp_path, monkeypatch):
    cache = tmp_path / "features"
    tower_calls = []
    real = model_module.vision_features
    monkeypatch.setattr(model_module, "vision_features", lambda *a: tower_calls.append(1) or real(*a))
    args = ["train", "pretrain", "--data", shapes["align"], "--image-folder", shapes["img"], "--vision-tower", "tiny",
            "--llm", "tiny", "--config", shapes["root"] / "recipe.yaml", "--max-steps", 2, "--lr", "3e-3",
            "--cache-features", cache, *FAST]
    run_cli(*args, "--out", tmp_path / "a")
    assert (cache / "index.json").is_file() and list(cache.glob("features-*.safetensors"))
    assert tower_calls == []
    # Same init, same first batch: the cached features give the uncached run's first loss.
    assert losses(tmp_path / "a")[0] == pytest.approx(losses(pipeline["stage1"])[0], rel=1e-5)

    def no_tower(*_):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(cache_module, "vision_features", no_tower)
    run_cli(*args, "--out", tmp_path / "b")


def test_lora_finetune_saves_adapters_and_exports_merged(shapes, pipeline, tmp_path):
    out = tmp_path / "lora"
    stage2(shapes, pipeline, out, "--max-steps", 3, "--lora", "--lora-r", 4, "--lora-alpha", 8)
    held = load_file(str(out / "model.safetensors"))
    assert any("lora_A" in k for k in held)
    run_cli("train", "export-hf", out, "--out", tmp_path / "hf")
    from transformers import LlavaForConditionalGeneration

    hf, info = LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any("lora" in k for k in hf.state_dict())
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_linear_projector_trains_and_refuses_hf_export(shapes, tmp_path):
    out = tmp_path / "linear"
    run_cli("train", "pretrain", "--data", shapes["align"], "--image-folder", shapes["img"], "--vision-tower", "tiny",
            "--llm", "tiny", "--projector", "linear", "--out", out, "--max-steps", 2, "--batch-size", 4, *FAST)
    assert "model.multi_modal_projector.linear.weight" in load_file(str(out / "model.safetensors"))
    result = run_cli("train", "export-hf", out, "--out", tmp_path / "hf", expect=2)
    assert "mlp2x_gelu" in result.output and "Traceback" not in result.output


def torchrun(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "datagen.train",
           *map(str, args)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_torchrun_two_processes_keep_ranks_identical(shapes, tmp_path):
    common = ["--image-folder", shapes["img"], "--max-steps", 3, "--batch-size", 4, "--num-workers", 0]
    log1 = torchrun("pretrain", "--data", shapes["align"], "--vision-tower", "tiny", "--llm", "tiny",
                    "--out", tmp_path / "s1", "--no-gradient-checkpointing", *common)
    # Stage 2 with checkpointing on: DDP + non-reentrant checkpointing + frozen tower must cooperate.
    log2 = torchrun("finetune", "--data", shapes["instruct"], "--from", tmp_path / "s1", "--out", tmp_path / "s2",
                    "--gradient-checkpointing", *common)
    for log in (log1, log2):
        assert "trainable weights identical across 2 ranks" in log
    assert (tmp_path / "s2" / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def local_models(tmp_path_factory):
    """A vision tower and an LLM saved like hub models (the path real runs take), with a tokenizer
    that has neither <image> nor a pad token, as Vicuna's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import CLIPVisionModel, LlamaForCausalLM, PreTrainedTokenizerFast

    from datagen.train.model import image_processor_class, tiny_text_config, tiny_vision_config

    root = tmp_path_factory.mktemp("hub")
    CLIPVisionModel(tiny_vision_config()).save_pretrained(root / "clip")
    image_processor_class()(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(root / "clip")
    specials = ["<unk>", "<s>", "</s>"]
    core = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))},
                                merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tok.save_pretrained(root / "llm")
    tok.pad_token = "<unk>"  # only for building the config; the saved tokenizer has none
    LlamaForCausalLM(tiny_text_config(tok)).save_pretrained(root / "llm")
    return root


def test_hub_style_sources_store_only_what_trained(shapes, local_models, tmp_path):
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    run_cli("train", "pretrain", "--data", shapes["align"], "--image-folder", shapes["img"], "--vision-tower",
            local_models / "clip", "--llm", local_models / "llm", "--out", s1, "--max-steps", 2, "--batch-size", 4,
            *FAST)
    assert all(k.startswith("model.multi_modal_projector.") for k in load_file(str(s1 / "model.safetensors")))
    run_cli("train", "finetune", "--data", shapes["instruct"], "--image-folder", shapes["img"], "--from", s1,
            "--out", s2, "--max-steps", 2, "--batch-size", 4, *FAST)
    held = load_file(str(s2 / "model.safetensors"))
    assert any(k.startswith("model.language_model.") for k in held) and "lm_head.weight" in held
    assert not any(k.startswith("model.vision_tower.") for k in held)
    # <image> was added to the vocabulary and the embeddings grew to fit it.
    assert held["model.language_model.embed_tokens.weight"].shape[0] >= 260
    item = shapes["held_out"][0]
    run_cli("chat", s2, "What colour is the shape?", "--image", shapes["img"] / item["image"], "--max-new-tokens", 4)
    run_cli("train", "export-hf", s2, "--out", tmp_path / "hf")


def test_sigterm_saves_a_checkpoint_at_the_step_and_resume_latest_finishes(shapes, pipeline, tmp_path, monkeypatch):
    """A preempted job (Slurm, Kubernetes, `timeout`) keeps the steps it made: SIGTERM during step 3 ends training
    after that step with checkpoint-3 saved, exit 143 and one line; `--resume latest` finishes the stage."""
    import signal

    out = tmp_path / "preempted"
    forward = model_module.LlavaStep.forward
    calls = []

    def forward_then_sigterm(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(model_module.LlavaStep, "forward", forward_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or the handler ray.init left when Ray tests ran first
    ended = stage2(shapes, pipeline, out, "--max-steps", 6, "--save-steps", 100, expect=143)
    lines = [line for line in ended.output.splitlines() if line.startswith("error:")]
    assert lines == [f"error: terminated (SIGTERM) at step 3; checkpoint saved in {out / 'checkpoint-3'}: rerun the same command with --resume latest to continue"]
    assert (out / "checkpoint-3" / "trainer_state.json").is_file() and not (out / "model.safetensors").exists()
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are put back
    monkeypatch.setattr(model_module.LlavaStep, "forward", forward)
    stage2(shapes, pipeline, out, "--max-steps", 6, "--save-steps", 100, "--resume", "latest")
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and (out / "model.safetensors").is_file()
