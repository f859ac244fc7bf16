"""The model: a stock transformers LlavaForConditionalGeneration assembled from parts.

Building on the stock class keeps checkpoints loadable by the ecosystem (export is just
save_pretrained) and keeps our step identical to stock. Parts are chosen by name: a vision tower
and an LLM (hub id, local path, or "tiny"), and a projector from PROJECTORS.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

from datagen.formats.records import IMAGE_TOKEN

TINY = "tiny"
# LLaVA reads the second-to-last CLIP layer and drops the CLS token ("default" strategy).
SELECT_LAYER = -2

# Module prefixes of LlavaForConditionalGeneration's state dict, per trainable part.
PARTS = {
    "vision_tower": ("model.vision_tower.",),
    "projector": ("model.multi_modal_projector.",),
    "language_model": ("model.language_model.", "lm_head."),
}


class LinearProjector(nn.Module):
    """Original LLaVA's projector: one linear map from vision width to LLM width."""

    def __init__(self, config: LlavaConfig):
        super().__init__()
        self.linear = nn.Linear(config.vision_config.hidden_size, config.text_config.hidden_size)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear(image_features)


def _stock_projector(config: LlavaConfig) -> nn.Module:
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    return LlavaMultiModalProjector(config)


# mlp2x_gelu is exactly transformers' LlavaMultiModalProjector (Linear-GELU-Linear).
PROJECTORS = {"linear": LinearProjector, "mlp2x_gelu": _stock_projector}


def tiny_vision_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(
        image_size=64, patch_size=16, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, projection_dim=64,
    )


# Vicuna-style chat template with generation markers, so the tiny tokenizer exercises the
# "tokenizer's own chat template" path offline.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] + ' ' }}"
    "{% elif m['role'] == 'user' %}{{ 'USER: ' + m['content'] + ' ' }}"
    "{% else %}{{ 'ASSISTANT:' }}{% generation %}{{ ' ' + m['content'] + eos_token }}{% endgeneration %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer built in code: 5 specials + 256 bytes, no network, no merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    specials = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(specials + alphabet)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        pad_token="<pad>", chat_template=TINY_CHAT_TEMPLATE,
    )


def tiny_text_config(tokenizer) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )


def prepare_tokenizer(tokenizer):
    """Give a hub tokenizer the two tokens training needs: <image> and a pad token."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        # LLaVA pads Vicuna with <unk>; fall back to a new token only when there is none.
        if tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return tokenizer


def load_tokenizer(llm: str):
    if llm == TINY:
        return build_tiny_tokenizer()
    return prepare_tokenizer(AutoTokenizer.from_pretrained(llm))


def image_processor_class():
    """CLIP's default image processor needs torchvision; without it, take the PIL one it would fall
    back to anyway (same pixels, same saved config) and skip the warning on every start."""
    import importlib.util

    import transformers

    return transformers.CLIPImageProcessor if importlib.util.find_spec("torchvision") else transformers.CLIPImageProcessorPil


def image_processor_for(vision_tower: str, config: CLIPVisionConfig):
    if vision_tower == TINY:
        side = config.image_size
        return image_processor_class()(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    return image_processor_class().from_pretrained(vision_tower)


def num_image_tokens(config: LlavaConfig) -> int:
    return (config.vision_config.image_size // config.vision_config.patch_size) ** 2


def llava_config(vision_config, text_config, image_token_id: int) -> LlavaConfig:
    return LlavaConfig(
        vision_config=vision_config, text_config=text_config, image_token_id=image_token_id,
        projector_hidden_act="gelu", vision_feature_layer=SELECT_LAYER,
        vision_feature_select_strategy="default", multimodal_projector_bias=True,
    )


def set_projector(llava: LlavaForConditionalGeneration, projector: str) -> None:
    if projector not in PROJECTORS:
        raise ValueError(f"unknown projector {projector!r}; choose one of {sorted(PROJECTORS)}")
    device = next(llava.model.language_model.parameters()).device
    dtype = next(llava.model.language_model.parameters()).dtype
    llava.model.multi_modal_projector = PROJECTORS[projector](llava.config).to(device=device, dtype=dtype)


def assemble(vision: CLIPVisionModel, lm, projector: str, image_token_id: int, seed: int):
    """Put loaded parts into a LlavaForConditionalGeneration without copying them."""
    config = llava_config(vision.config, lm.config, image_token_id)
    # The shell is built on the meta device: the parts replace every tensor it would allocate,
    # so a 7B LLM is never materialised twice.
    with torch.device("meta"):
        llava = LlavaForConditionalGeneration(config)
    llava.model.vision_tower = vision
    llava.model.language_model = getattr(lm, lm.base_model_prefix)
    llava.lm_head = lm.get_output_embeddings()
    torch.manual_seed(seed)
    set_projector(llava, projector)
    left = [n for n, t in list(llava.named_parameters()) + list(llava.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"model assembly left tensors unset: {left[:5]}")
    return llava


def build_base(vision_tower: str, llm: str, projector: str, seed: int, dtype=torch.float32):
    """Vision tower + LLM from their sources ("tiny" = random init from a config) + new projector."""
    tokenizer = load_tokenizer(llm)
    torch.manual_seed(seed)
    if vision_tower == TINY:
        vision = CLIPVisionModel(tiny_vision_config()).to(dtype)
    else:
        vision = CLIPVisionModel.from_pretrained(vision_tower, dtype=dtype)
    if llm == TINY:
        lm = LlamaForCausalLM(tiny_text_config(tokenizer)).to(dtype)
    else:
        lm = AutoModelForCausalLM.from_pretrained(llm, dtype=dtype)
        if len(tokenizer) > lm.get_input_embeddings().num_embeddings:
            lm.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    llava = assemble(vision, lm, projector, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), seed)
    return llava, tokenizer, image_processor_for(vision_tower, vision.config)


def vision_features(llava: LlavaForConditionalGeneration, pixel_values: torch.Tensor) -> torch.Tensor:
    """Frozen vision tower output at the select layer, patch tokens only (pre-projector)."""
    with torch.no_grad():
        out = llava.model.vision_tower(pixel_values.to(llava.model.vision_tower.dtype), output_hidden_states=True)
    return out.hidden_states[SELECT_LAYER][:, 1:]


class LlavaStep(nn.Module):
    """The unit DDP/DeepSpeed wrap: projector + stock merge and LM, from pixels or cached features.

    The projector must run inside the wrapped forward so data-parallel engines see its gradients;
    the stock forward then scatters the projected features into the <image> positions and checks
    that both counts agree.
    """

    def __init__(self, llava):
        super().__init__()
        self.llava = llava

    @property
    def core(self) -> LlavaForConditionalGeneration:
        model = self.llava
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def forward(self, input_ids, attention_mask, labels=None, pixel_values=None, image_features=None, **kwargs):
        core = self.core
        if pixel_values is not None:
            image_features = vision_features(core, pixel_values)
        mm = None
        if image_features is not None:
            projected = core.model.multi_modal_projector(image_features.to(core.lm_head.weight.dtype))
            n_slots = int((input_ids == core.config.image_token_id).sum())
            if n_slots != projected.shape[0] * projected.shape[1]:
                raise ValueError(
                    f"batch has {n_slots} <image> placeholder tokens but {projected.shape[0]} images x "
                    f"{projected.shape[1]} patches = {projected.shape[0] * projected.shape[1]} feature vectors"
                )
            mm = {"image": BaseModelOutputWithPooling(pooler_output=list(projected))}
        return self.llava(
            input_ids=input_ids, attention_mask=attention_mask, labels=labels, mm_encoder_outputs=mm, **kwargs
        )
