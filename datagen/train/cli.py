"""`datagen train ...` and `datagen chat`. Only stdlib + typer at import time: torch and
transformers load inside the commands, so the generation CLI stays fast."""
from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

train_app = typer.Typer(help="Train a LLaVA-style model on datagen records (stage 1 pretrain, stage 2 finetune).",
                        no_args_is_help=True)

def Opt(*decls: str, field: str | None = None, **kwargs):  # noqa: N802 - stands in for typer.Option
    """A flag left out takes TrainConfig's value (the stage's, where stages differ, unless --config sets it): shown
    as the flag's default, so --help says what a run without it uses."""
    name = field or decls[0].split("/")[0].removeprefix("--").replace("-", "_")
    return typer.Option(*decls, show_default=_config_default(name, decls[0]), **kwargs)


def _config_default(name: str, flag: str) -> str | bool:
    from .config import FIELDS, STAGE_DEFAULTS

    if name not in FIELDS:
        return False
    by_stage = {stage: values[name] for stage, values in STAGE_DEFAULTS.items() if name in values}
    if len(set(by_stage.values())) > 1:
        return ", ".join(f"{value} {stage}" for stage, value in by_stage.items())
    default = next(iter(by_stage.values())) if by_stage else FIELDS[name].default
    if name == "template":
        return "plain for pretrain, vicuna_v1 for finetune"
    if isinstance(default, bool) and "/" in flag:  # a switch: the side it is on
        return flag.split("/")[0 if default else 1].removeprefix("--")
    return str(default) if default not in ("", None) else False


Config = Annotated[Optional[Path], Opt("--config", help="YAML of TrainConfig fields (see configs/); flags override it.")]
Data = Annotated[Optional[str], Opt("--data", help="JSON array or JSONL of LLaVA records.")]
ImageFolder = Annotated[Optional[str], Opt("--image-folder", help="Folder the records' image paths are relative to.")]
Out = Annotated[Optional[str], Opt("--out", help="Output checkpoint directory.")]
Epochs = Annotated[Optional[float], Opt("--epochs")]
MaxSteps = Annotated[Optional[int], Opt("--max-steps", help="Stop after this many optimizer steps (overrides --epochs).")]
Lr = Annotated[Optional[float], Opt("--lr")]
BatchSize = Annotated[Optional[int], Opt("--batch-size", help="Per device.")]
GradAccum = Annotated[Optional[int], Opt("--grad-accum")]
MaxLength = Annotated[Optional[int], Opt("--max-length")]
Seed = Annotated[Optional[int], Opt("--seed")]
Resume = Annotated[Optional[str], Opt("--resume", help="A mid-run checkpoint dir under --out, or 'latest'.")]
Template = Annotated[Optional[str], Opt("--template", help="plain | vicuna_v1 | chat (the tokenizer's own).")]
CacheFeatures = Annotated[Optional[str], Opt("--cache-features", help="Compute frozen vision features once into DIR and reuse them.")]
GradCkpt = Annotated[Optional[bool], Opt("--gradient-checkpointing/--no-gradient-checkpointing")]
GroupByLength = Annotated[Optional[bool], Opt("--group-by-length/--no-group-by-length")]
SaveSteps = Annotated[Optional[int], Opt("--save-steps")]
LoggingSteps = Annotated[Optional[int], Opt("--logging-steps")]
NumWorkers = Annotated[Optional[int], Opt("--num-workers", help="Data-loader worker processes.")]
DeepSpeed = Annotated[Optional[str], Opt("--deepspeed", help="DeepSpeed json, e.g. configs/deepspeed/zero3.json.")]
ImageAspect = Annotated[Optional[str], Opt("--image-aspect", help="pad (v1.5) or crop (v1).")]


def _fail(error: Exception | str):
    """Bad input: one line naming the file or flag, exit code 2, no traceback."""
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(2) from None


TRAIN_EXTRA = "pip install 'datagen[train]' (or `make setup-train`)"
# LLaVA-1.5's language model, named in the message that asks for --llm (a 13 GB download, never chosen silently).
LLAVA_LLM = "lmsys/vicuna-7b-v1.5"


def _need_train_extra(command: str) -> None:
    """The runtime-only install (`make demo`'s) has no torch: say which extra to add, before anything else."""
    for module in ("torch", "transformers"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules, a broken install
            found = False
        if not found:
            _fail(f"`datagen {command}` needs {module}, which this install lacks; {TRAIN_EXTRA}")


def _need_llm(stage: str, config: Optional[Path], flags: dict) -> None:
    """Stage 1 builds the model from --llm: no default, a 7B download is not a thing to start unasked."""
    if stage != "pretrain" or flags.get("llm") is not None:
        return
    from .config import ConfigError, load_yaml

    if config is None or "llm" not in load_yaml(str(config)):
        raise ConfigError(f"--llm is required: a Hugging Face id (LLaVA-1.5 used {LLAVA_LLM}), a local model folder, or 'tiny' (or llm: in --config)")


def _run(stage: str, config: Optional[Path], flags: dict) -> None:
    _need_train_extra(f"train {stage}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    # huggingface_hub prints its warnings (a download retried, offline) through a handler of its own: not twice.
    logging.getLogger("huggingface_hub").propagate = False
    from datagen.errors import TERMINATED_EXIT, InputError, Terminated, sigterm_as_interrupt

    from .config import make_config

    try:
        _need_llm(stage, config, flags)
        cfg = make_config(stage, str(config) if config else None, flags)
    except InputError as e:
        _fail(e)
    from .loop import train

    try:
        with sigterm_as_interrupt(take_over=True):  # before training starts; during it the trainer stops at a step boundary instead
            out = train(cfg)
    except Terminated as e:
        typer.echo(f"error: {str(e) or 'terminated (SIGTERM) before training started; nothing was saved: rerun the same command'}", err=True)
        raise typer.Exit(TERMINATED_EXIT) from None
    except InputError as e:  # bad config, data or checkpoint: the train package's errors all derive from it
        _fail(e)
    except OSError as e:
        if e.errno is not None:
            raise
        # transformers' own "cannot load" (offline and not in the cache, a wrong id, a folder without weights).
        _fail(
            f"a model could not be loaded ({' '.join(str(e).split())[:300]}); pass --llm and --vision-tower as local folders,"
            " Hugging Face ids you can download (or that are in the cache when offline), or 'tiny'"
        )
    typer.echo(f"checkpoint written to {out}")


@train_app.command()
def pretrain(
    data: Data = None, image_folder: ImageFolder = None,
    vision_tower: Annotated[Optional[str], Opt("--vision-tower", help="Hub id, local path, or 'tiny'.")] = None,
    llm: Annotated[Optional[str], Opt("--llm", help="Hub id, local path, or 'tiny'.")] = None,
    projector: Annotated[Optional[str], Opt("--projector", help="linear | mlp2x_gelu")] = None,
    out: Out = None, config: Config = None, epochs: Epochs = None, max_steps: MaxSteps = None, lr: Lr = None,
    batch_size: BatchSize = None, grad_accum: GradAccum = None, max_length: MaxLength = None, seed: Seed = None,
    resume: Resume = None, template: Template = None, cache_features: CacheFeatures = None,
    gradient_checkpointing: GradCkpt = None, group_by_length: GroupByLength = None, save_steps: SaveSteps = None,
    logging_steps: LoggingSteps = None, num_workers: NumWorkers = None, deepspeed: DeepSpeed = None,
    image_aspect: ImageAspect = None,
):
    """Stage 1: train only the projector on alignment records; saves projector + model config."""
    flags = dict(locals())
    _run("pretrain", flags.pop("config"), flags)


@train_app.command()
def finetune(
    data: Data = None, image_folder: ImageFolder = None,
    from_ckpt: Annotated[Optional[str], Opt("--from", field="from_ckpt", help="The stage-1 output directory.")] = None,
    out: Out = None,
    lora: Annotated[Optional[bool], Opt("--lora/--full", help="Train the LLM through LoRA adapters (peft).")] = None,
    lora_r: Annotated[Optional[int], Opt("--lora-r")] = None,
    lora_alpha: Annotated[Optional[int], Opt("--lora-alpha")] = None,
    config: Config = None, epochs: Epochs = None, max_steps: MaxSteps = None, lr: Lr = None,
    batch_size: BatchSize = None, grad_accum: GradAccum = None, max_length: MaxLength = None, seed: Seed = None,
    resume: Resume = None, template: Template = None, cache_features: CacheFeatures = None,
    gradient_checkpointing: GradCkpt = None, group_by_length: GroupByLength = None, save_steps: SaveSteps = None,
    logging_steps: LoggingSteps = None, num_workers: NumWorkers = None, deepspeed: DeepSpeed = None,
    image_aspect: ImageAspect = None,
):
    """Stage 2: train projector + LLM (full or LoRA) on instruction records, starting from --from."""
    if from_ckpt is not None and not Path(from_ckpt).is_dir():
        raise typer.BadParameter(f"{from_ckpt} does not exist; pass the --out of `datagen train pretrain`", param_hint="--from")
    flags = dict(locals())
    _run("finetune", flags.pop("config"), flags)


def _load(ckpt: str):
    from .checkpoint import CheckpointError, load_checkpoint

    try:
        return load_checkpoint(ckpt)
    except CheckpointError as e:
        _fail(e)


@train_app.command("export-hf")
def export_hf(
    ckpt: Annotated[str, typer.Argument(help="A finetune (or pretrain) checkpoint directory.")],
    out: Annotated[str, Opt("--out", help="Directory for the transformers checkpoint.")],
):
    """Write a LlavaForConditionalGeneration checkpoint (+ LlavaProcessor) that from_pretrained loads."""
    _need_train_extra("train export-hf")
    from .checkpoint import CheckpointError
    from .export import export_hf as run_export

    try:
        run_export(ckpt, out)
    except CheckpointError as e:
        _fail(e)
    typer.echo(f"exported to {out}")


def chat(
    ckpt: Annotated[str, typer.Argument(help="A datagen checkpoint directory.")],
    question: Annotated[str, typer.Argument(help="The question about the image.")],
    image: Annotated[Path, Opt("--image", help="The image file.")],
    max_new_tokens: Annotated[int, Opt("--max-new-tokens")] = 256,
):
    """Answer one question about one image with a trained checkpoint."""
    _need_train_extra("chat")
    if not image.is_file():
        raise typer.BadParameter(f"{image} does not exist", param_hint="--image")
    from .infer import answer

    model, tok, proc, meta = _load(ckpt)
    typer.echo(answer(model, tok, proc, meta, image, question, max_new_tokens))


def root_app() -> typer.Typer:
    """Stand-alone entry (`python -m datagen.train.cli`), mirroring the main CLI's layout."""
    app = typer.Typer(no_args_is_help=True)
    app.add_typer(train_app, name="train")
    app.command("chat")(chat)
    return app


if __name__ == "__main__":
    root_app()()
