"""A SentencePiece/Llama-style tokenizer built offline: Unigram pieces with the `▁` word marker,
Metaspace pre-tokenizer,
BOS added by the post-processor, `<image>` as an added special token.

Words carry a high score so each known word is one piece; lone characters are the fallback, so any
text (including a literal "<s>") tokenises without <unk>."""
from __future__ import annotations

import string

from transformers import PreTrainedTokenizerFast

SPECIALS = ["<unk>", "<s>", "</s>"]
WORDS = (
    "▁A ▁chat ▁between ▁a ▁curious ▁user ▁and ▁an ▁artificial ▁intelligence ▁assistant ▁The ▁gives "
    "▁helpful ▁detailed ▁polite ▁answers ▁to ▁the ▁user ▁questions ▁USER USER ▁ASSISTANT ▁What What "
    "▁colour ▁Red ▁Shape ▁circle ▁red ▁is ▁this ▁Use ▁or ▁here ▁Describe ▁briefly"
).split()


def build_sp_tokenizer(prepend_scheme: str = "first") -> PreTrainedTokenizerFast:
    """prepend_scheme "first": the `▁` marker only at the start of a string (Llama's non-legacy mode);
    "always": also after every special token (legacy mode, as Vicuna's tokenizer.json behaves)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    chars = sorted(set(string.ascii_letters + string.digits + string.punctuation + "\n") | {"▁"})
    # As in SentencePiece, control pieces are never chosen for text: it spells "<s>" out.
    vocab = [(t, -1e4) for t in SPECIALS] + [(w, -1.0) for w in WORDS] + [(c, -10.0) for c in chars]
    core = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend_scheme, split=True)
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=prepend_scheme, split=True)
    core.add_special_tokens(SPECIALS + ["<image>"])
    core.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<unk>")
