"""Training through the Hugging Face Trainer: it brings DDP/DeepSpeed/FSDP, bf16, checkpoint +
exact resume and TensorBoard/W&B logging; we supply the model step, the sampler and the
checkpoint format."""
from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib.util
import json
import logging
import os
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import seed_worker

from datagen.errors import Terminated, on_sigterm

from .cache import FeatureCache, vision_fingerprint
from .checkpoint import META, apply_stage, load_checkpoint, load_weights, new_meta, save_checkpoint
from .config import ConfigError, TrainConfig
from .data import Collator, LengthGroupedSampler, SupervisedDataset, load_records
from .model import LlavaStep, build_base, num_image_tokens

log = logging.getLogger("datagen.train")


class StopOnSigterm(TrainerCallback):
    """SIGTERM (a scheduler's preemption, `timeout`, docker stop) ends training at the end of the step under way with
    a checkpoint saved there, which `--resume latest` continues from; raising at once would lose the steps since the
    last save. Where several ranks train, each stops at the step its own signal came in."""

    def __init__(self) -> None:
        self.requested = False

    def listening(self) -> contextlib.AbstractContextManager[None]:
        return on_sigterm(self._request)

    def _request(self, signum: int, frame: object) -> None:
        self.requested = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control


class LlavaTrainer(Trainer):
    def __init__(self, *args, meta: dict, tokenizer, image_processor, lengths, group_by_length: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.meta, self.tok, self.image_processor = meta, tokenizer, image_processor
        self.lengths, self.group = lengths, group_by_length

    def get_train_dataloader(self):
        args = self.args
        batches = LengthGroupedSampler(self.lengths, args.per_device_train_batch_size, args.seed, self.group)
        workers = args.dataloader_num_workers
        loader = DataLoader(
            self.train_dataset, batch_sampler=batches, collate_fn=self.data_collator, num_workers=workers,
            pin_memory=args.dataloader_pin_memory, persistent_workers=args.dataloader_persistent_workers and workers > 0,
            worker_init_fn=partial(seed_worker, num_workers=workers, rank=args.process_index),
        )
        return self.accelerator.prepare(loader)

    def _save(self, output_dir=None, state_dict=None):
        # Trainer hands us a gathered state dict under ZeRO-3/FSDP, so no rank writes empty shards.
        if not self.args.should_save:
            return
        step = self.accelerator.unwrap_model(self.model)
        if state_dict is not None:
            state_dict = {k.removeprefix("llava."): v for k, v in state_dict.items()}
        save_checkpoint(output_dir or self.args.output_dir, step.llava, self.tok, self.image_processor, self.meta, state_dict)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        load_weights(self.accelerator.unwrap_model(model or self.model).llava, resume_from_checkpoint)


def report_targets(requested: list[str]) -> list[str]:
    if requested != ["auto"]:
        return requested
    found = []
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        found.append("tensorboard")
    # W&B only when the user configured it; an unconfigured install would stop to ask for a login.
    if importlib.util.find_spec("wandb") and any(k in os.environ for k in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT")):
        found.append("wandb")
    return found or ["none"]


def find_resume(cfg: TrainConfig) -> str | None:
    if not cfg.resume:
        return None
    if cfg.resume != "latest":
        if not (Path(cfg.resume) / "trainer_state.json").is_file():
            raise ConfigError(f"--resume {cfg.resume}: not a mid-run checkpoint (no trainer_state.json); pass one of the checkpoint dirs under --out, or 'latest'")
        return cfg.resume
    found = []
    for d in Path(cfg.out).iterdir() if Path(cfg.out).is_dir() else []:
        state = d / "trainer_state.json"
        if (d / META).is_file() and state.is_file():
            found.append((json.loads(state.read_text())["global_step"], str(d)))
    if not found:
        log.warning("--resume latest: no checkpoint under %s yet, starting fresh", cfg.out)
        return None
    return max(found)[1]


def check_ranks_in_sync(model) -> None:
    """Data parallelism must keep replicas identical; compare a digest of the trainable weights."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    h = hashlib.sha1()
    for _, p in sorted((n, p) for n, p in model.named_parameters() if p.requires_grad):
        h.update(p.detach().float().cpu().numpy().tobytes())
    digests = [None] * dist.get_world_size()
    dist.all_gather_object(digests, h.hexdigest())
    if len(set(digests)) != 1:
        raise RuntimeError(f"ranks diverged: trainable-weight digests {digests}")
    log.info("trainable weights identical across %d ranks (sha1 %s)", len(digests), digests[0][:12])


def release_process_group() -> None:
    """Tear the process group down once all ranks are done: a gloo group still alive at interpreter exit
    can abort a rank ("terminate called without an active exception") after its work was saved."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def build_model(cfg: TrainConfig, dtype):
    if cfg.stage == "pretrain":
        llava, tok, proc = build_base(cfg.vision_tower, cfg.llm, cfg.projector, cfg.seed, dtype)
        sources = {"vision_tower": cfg.vision_tower, "llm": cfg.llm}
    else:
        llava, tok, proc, parent = load_checkpoint(cfg.from_ckpt, dtype)
        if parent.get("lora"):
            llava = llava.merge_and_unload()
        sources = parent["sources"]
        cfg.projector = parent["projector"]
    lora = dict(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout) if cfg.lora else None
    meta = new_meta(cfg.stage, sources, cfg.projector, cfg.template, cfg.image_aspect, lora)
    return llava, tok, proc, meta


def train(cfg: TrainConfig) -> str:
    """Run one stage; returns the output checkpoint directory."""
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    args = TrainingArguments(
        output_dir=cfg.out, per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        warmup_steps=cfg.warmup_ratio, lr_scheduler_type=cfg.lr_scheduler, logging_steps=cfg.logging_steps,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit, seed=cfg.seed,
        bf16=cuda, use_cpu=not cuda, dataloader_num_workers=cfg.num_workers,
        remove_unused_columns=False, ddp_find_unused_parameters=False, report_to=report_targets(cfg.report_to),
        deepspeed=cfg.deepspeed or None, disable_tqdm=True, logging_first_step=True,
    )
    resume = find_resume(cfg)
    records = load_records(cfg.data)  # before the model: a broken file should fail in seconds, not after a 7B load
    llava, tok, proc, meta = build_model(cfg, dtype)
    model = apply_stage(llava, cfg.stage, meta["lora"])
    if cfg.gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen inputs (no enable_input_require_grads hack).
        llava.model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    n_image = num_image_tokens(llava.config)
    ds = SupervisedDataset(
        records, cfg.image_folder, tok, cfg.template, llava.config.image_token_id, n_image,
        cfg.max_length, proc, cfg.image_aspect,
    )
    if cfg.cache_features:
        try:
            cache = FeatureCache(cfg.cache_features, vision_fingerprint(llava, cfg.image_aspect))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        with args.main_process_first(desc="feature cache"):
            images = [e.image for e in ds.examples if e.image is not None]
            cache.fill(llava, images, proc, cfg.image_aspect, device=args.device, num_workers=cfg.num_workers)
            cache = FeatureCache(cfg.cache_features, cache.fingerprint)
        ds.cache = cache
    log.info("%d training records, %d image tokens per image, template %s", len(ds), n_image, cfg.template)

    stop = StopOnSigterm()
    trainer = LlavaTrainer(
        model=LlavaStep(model), args=args, train_dataset=ds, data_collator=Collator(tok.pad_token_id),
        meta=meta, tokenizer=tok, image_processor=proc, lengths=ds.lengths, group_by_length=cfg.group_by_length,
        callbacks=[stop],
    )
    with stop.listening():
        trainer.train(resume_from_checkpoint=resume)
    if stop.requested:
        # The stage is not finished: its final weights are not written where a finished stage's go.
        step = trainer.state.global_step
        raise Terminated(f"terminated (SIGTERM) at step {step}; checkpoint saved in {Path(cfg.out) / f'checkpoint-{step}'}: "
                         "rerun the same command with --resume latest to continue")
    trainer.save_model(cfg.out)
    trainer.save_state()
    check_ranks_in_sync(model)
    # DDP's reducer holds the process group; freed first, the group then dies in release_process_group with no
    # collective pending, instead of in the reducer's destructor or at interpreter exit (both can hang or abort).
    del trainer
    gc.collect()
    release_process_group()
    if ds.skipped:
        log.warning("records skipped in this run: %s", ds.skipped)
    return cfg.out

