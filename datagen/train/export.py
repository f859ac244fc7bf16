"""Export a checkpoint in the canonical llava-hf layout, readable by transformers 4.x and 5.x.

transformers 5 names the parts `model.vision_tower.*` (no `vision_model.`), `model.language_model.*`
and `lm_head.*` and saves its tokenizer as `TokenizersBackend`; 4.x (and vLLM, SGLang, TGI) expect
llava-hf's names and `PreTrainedTokenizerFast`, and 4.x loads the 5.x names with only a warning and
random vision weights. So the files are written here, in the layout both read: 5.x maps the legacy
names itself. Each file is what one of the two versions reads; none is left to `save_pretrained`.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from .chat_template import chat_template_for
from .checkpoint import CheckpointError, load_checkpoint
from datagen.formats.records import IMAGE_TOKEN

# transformers 5 prefix -> llava-hf (transformers 4.x) prefix; the first match wins.
LEGACY_PREFIXES = (
    ("model.vision_tower.", "vision_tower.vision_model."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
)
WEIGHTS = "model.safetensors"


def legacy_name(name: str) -> str:
    for new, old in LEGACY_PREFIXES:
        if name.startswith(new):
            return old + name[len(new):]
    raise CheckpointError(f"weight {name!r} has no llava-hf name; the export knows {[p for p, _ in LEGACY_PREFIXES]}")


def legacy_state_dict(model) -> dict:
    """Every tensor under its llava-hf name; a tied lm_head is stored once, as 4.x and 5.x both retie it."""
    out = {}
    tied = model.config.get_text_config().tie_word_embeddings
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        out[legacy_name(name)] = tensor.detach().contiguous().cpu()
    return out


def _text_config(config) -> dict:
    """Text config with the keys 4.x reads (`rope_theta`, `rope_scaling`) beside 5.x's `rope_parameters`."""
    text = config.to_dict()
    rope = text.get("rope_parameters") or {}
    if "rope_theta" in rope:
        text["rope_theta"] = rope["rope_theta"]
    if rope.get("rope_type", "default") != "default":
        text["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    return text


def config_dict(model) -> dict:
    config = model.config
    out = config.to_dict()
    out["architectures"] = ["LlavaForConditionalGeneration"]
    out["text_config"] = _text_config(config.text_config)
    out["vision_config"] = config.vision_config.to_dict()
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    out["torch_dtype"] = out["dtype"] = dtype  # 4.x reads the first, 5.x the second
    out["image_token_index"] = config.image_token_id  # the 4.x name of image_token_id
    return out


def preprocessor_dict(image_processor, aspect: str) -> dict:
    """LlavaImageProcessor (4.47+ and 5.x): CLIP's resize/crop/normalise, plus LLaVA-1.5's pad to a
    square with the mean colour when training padded (do_pad), exactly as data.load_image does."""
    return {
        "image_processor_type": "LlavaImageProcessor",
        "processor_class": "LlavaProcessor",
        "do_pad": aspect == "pad",
        "do_resize": True,
        "size": {"shortest_edge": image_processor.size["shortest_edge"]},
        "resample": int(image_processor.resample),
        "do_center_crop": True,
        "crop_size": dict(image_processor.crop_size),
        "do_rescale": True,
        "rescale_factor": image_processor.rescale_factor,
        "do_normalize": True,
        "image_mean": list(image_processor.image_mean),
        "image_std": list(image_processor.image_std),
        "do_convert_rgb": True,
    }


def write_tokenizer(tokenizer, out: Path, chat_template: str) -> None:
    """tokenizer.json as it is, declared as PreTrainedTokenizerFast: both versions then run exactly this
    pipeline (5.x's LlamaTokenizer would rebuild its own pre-tokenizer instead)."""
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    specials = {
        "bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token,
        "unk_token": tokenizer.unk_token, "pad_token": tokenizer.pad_token,
    }
    specials = {k: v for k, v in specials.items() if v is not None}
    added = {
        str(i): {"content": t.content, "lstrip": t.lstrip, "rstrip": t.rstrip, "normalized": t.normalized,
                 "single_word": t.single_word, "special": t.special}
        for i, t in sorted(tokenizer.added_tokens_decoder.items())
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "processor_class": "LlavaProcessor",
        **specials,
        "added_tokens_decoder": added,
        "model_max_length": tokenizer.model_max_length if tokenizer.model_max_length < 1e9 else 4096,
        "padding_side": tokenizer.padding_side,
        "clean_up_tokenization_spaces": False,
        "chat_template": chat_template,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2, ensure_ascii=False))


def export_hf(ckpt: str, out: str) -> str:
    model, tokenizer, image_processor, meta = load_checkpoint(ckpt)
    if meta["projector"] != "mlp2x_gelu":
        raise CheckpointError(
            f"{ckpt}: projector {meta['projector']!r} has no LlavaForConditionalGeneration layout; "
            "export needs --projector mlp2x_gelu at pretrain"
        )
    if meta.get("lora"):
        model = model.merge_and_unload()
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    save_file(legacy_state_dict(model), str(path / WEIGHTS), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config_dict(model), indent=2))
    if model.generation_config is not None:
        model.generation_config.save_pretrained(path)
    chat_template = chat_template_for(meta["template"], tokenizer)
    write_tokenizer(tokenizer, path, chat_template)
    (path / "preprocessor_config.json").write_text(
        json.dumps(preprocessor_dict(image_processor, meta["image_aspect"]), indent=2))
    processor = {
        "processor_class": "LlavaProcessor",
        "patch_size": model.config.vision_config.patch_size,
        "vision_feature_select_strategy": "default",
        "num_additional_image_tokens": 1,  # CLIP's CLS token, which "default" drops
        "image_token": IMAGE_TOKEN,
    }
    (path / "processor_config.json").write_text(json.dumps(processor, indent=2))
    # 4.44-4.57 read a processor's template from chat_template.json; 5.x from chat_template.jinja.
    (path / "chat_template.json").write_text(json.dumps({"chat_template": chat_template}, indent=2))
    (path / "chat_template.jinja").write_text(chat_template)
    return out
