"""One flat config for both stages: LLaVA-1.5 defaults per stage < YAML file < command-line flags."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from datagen.errors import InputError


class ConfigError(InputError, ValueError):
    """Bad user input; the CLI prints it as one line and exits 2."""


@dataclass
class TrainConfig:
    stage: str = "pretrain"  # "pretrain" (stage 1) or "finetune" (stage 2)
    data: str = ""
    image_folder: str = ""
    out: str = ""
    vision_tower: str = "openai/clip-vit-large-patch14-336"
    llm: str = "lmsys/vicuna-7b-v1.5"
    projector: str = "mlp2x_gelu"
    from_ckpt: str = ""  # stage 2: the stage-1 output
    template: str = ""  # "" = plain for pretrain, vicuna_v1 for finetune; or "chat"
    image_aspect: str = "pad"  # v1.5 pads to square with the mean colour; v1 centre-crops ("crop")
    lora: bool = False
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    epochs: float = 1.0
    max_steps: int = -1
    lr: float = 1e-3
    batch_size: int = 32  # per device
    grad_accum: int = 1
    max_length: int = 2048
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 disables clipping
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"
    seed: int = 42
    resume: str = ""  # a checkpoint dir, or "latest" under --out
    group_by_length: bool = True
    gradient_checkpointing: bool = True
    cache_features: str = ""
    save_steps: int = 500
    save_total_limit: int = 2
    logging_steps: int = 10
    num_workers: int = 2
    deepspeed: str = ""  # a DeepSpeed json (configs/deepspeed/*.json)
    report_to: list[str] = field(default_factory=lambda: ["auto"])  # auto = tensorboard/wandb if installed


# LLaVA-1.5's scripts (8 GPUs): global batch 256 / 128, lr 1e-3 / 2e-5, 1 epoch, cosine, 3% warmup.
STAGE_DEFAULTS = {
    "pretrain": dict(lr=1e-3, batch_size=32, grad_accum=1, epochs=1.0),
    "finetune": dict(lr=2e-5, batch_size=16, grad_accum=1, epochs=1.0),
}
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def load_yaml(path: str) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {path}: file not found; pass an existing YAML file (see configs/)")
    try:
        values = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]}); fix the file") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option: value at the top level")
    values = {k.replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ConfigError(f"--config {path}: unknown option(s) {unknown}; valid ones are the TrainConfig fields")
    return values


def make_config(stage: str, yaml_path: str | None, flags: dict) -> TrainConfig:
    """Flags whose value is None were not given on the command line and do not override."""
    values = dict(STAGE_DEFAULTS[stage])
    if yaml_path:
        values.update(load_yaml(yaml_path))
    values.update({k: v for k, v in flags.items() if v is not None})
    values["stage"] = stage
    cfg = TrainConfig(**values)
    for name in ("data", "image_folder", "out"):
        if not getattr(cfg, name):
            raise ConfigError(f"--{name.replace('_', '-')} is required (on the command line or in --config)")
    if cfg.stage == "finetune" and not cfg.from_ckpt:
        raise ConfigError("--from is required for finetune: pass the directory `datagen train pretrain` wrote")
    if not Path(cfg.data).is_file():
        raise ConfigError(f"--data {cfg.data}: file not found; pass a JSON or JSONL file of records")
    if not Path(cfg.image_folder).is_dir():
        raise ConfigError(f"--image-folder {cfg.image_folder}: not a directory; pass the folder the image paths are relative to")
    if cfg.template not in ("", "plain", "vicuna_v1", "chat"):
        raise ConfigError(f"--template {cfg.template}: choose plain, vicuna_v1 or chat")
    if cfg.projector not in ("linear", "mlp2x_gelu"):
        raise ConfigError(f"--projector {cfg.projector}: choose linear or mlp2x_gelu")
    if cfg.image_aspect not in ("pad", "crop"):
        raise ConfigError(f"--image-aspect {cfg.image_aspect}: choose pad or crop")
    if cfg.lora and cfg.stage != "finetune":
        raise ConfigError("--lora applies to finetune only (stage 1 trains the projector alone)")
    if cfg.deepspeed and not Path(cfg.deepspeed).is_file():
        raise ConfigError(f"--deepspeed {cfg.deepspeed}: file not found; see configs/deepspeed/")
    if not cfg.template:
        cfg.template = "plain" if stage == "pretrain" else "vicuna_v1"
    return cfg
