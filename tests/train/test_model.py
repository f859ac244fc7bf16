"""Model parts: projectors, the merge of image features, and parity with the stock forward."""
from __future__ import annotations

import pytest
import torch

from datagen.train.checkpoint import apply_stage
from datagen.train.model import PROJECTORS, LlavaStep, build_base, num_image_tokens, set_projector


@pytest.fixture(scope="module")
def tiny():
    return build_base("tiny", "tiny", "mlp2x_gelu", seed=0)


def batch(llava, n_images: int, text_len: int = 8):
    n = num_image_tokens(llava.config)
    img = llava.config.image_token_id
    ids = torch.tensor([[1] + [img] * n + list(range(10, 10 + text_len))] * n_images)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone(),
            "pixel_values": torch.randn(n_images, 3, 64, 64)}


@pytest.mark.parametrize("kind", sorted(PROJECTORS))
def test_projectors_map_patches_to_llm_width(tiny, kind):
    llava, _, _ = tiny
    projector = PROJECTORS[kind](llava.config)
    out = projector(torch.randn(2, 16, llava.config.vision_config.hidden_size))
    assert out.shape == (2, 16, llava.config.text_config.hidden_size)


def test_step_equals_stock_forward_from_pixels_and_from_features(tiny):
    llava, _, _ = tiny
    b = batch(llava, 2)
    with torch.no_grad():
        stock = llava(**b)
        ours = LlavaStep(llava)(**b)
        features = llava.model.vision_tower(b["pixel_values"], output_hidden_states=True).hidden_states[-2][:, 1:]
        cached = LlavaStep(llava)(**{k: v for k, v in b.items() if k != "pixel_values"}, image_features=features)
    assert features.shape == (2, 16, llava.config.vision_config.hidden_size)  # 64/16 squared patches, no CLS
    assert torch.allclose(ours.logits, stock.logits) and torch.allclose(cached.logits, stock.logits, atol=1e-6)
    assert torch.allclose(ours.loss, stock.loss)


def test_feature_and_placeholder_count_mismatch_is_an_error(tiny):
    llava, _, _ = tiny
    b = batch(llava, 1)
    b["pixel_values"] = torch.randn(2, 3, 64, 64)
    with pytest.raises(ValueError, match="16 <image> placeholder tokens but 2 images x 16 patches = 32"):
        LlavaStep(llava)(**b)


def test_stage_table_sets_trainable_parts():
    llava, _, _ = build_base("tiny", "tiny", "linear", seed=0)
    trainable = lambda m: {n.split(".")[1] if n.startswith("model.") else n.split(".")[0]  # noqa: E731
                           for n, p in m.named_parameters() if p.requires_grad}
    apply_stage(llava, "pretrain")
    assert trainable(llava) == {"multi_modal_projector"}
    apply_stage(llava, "finetune")
    assert trainable(llava) == {"multi_modal_projector", "language_model", "lm_head"}
    set_projector(llava, "mlp2x_gelu")
    assert type(llava.model.multi_modal_projector).__name__ == "LlavaMultiModalProjector"
