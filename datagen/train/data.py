"""Records -> token ids, loss labels and images; length-grouped sampling; collation.

Loss labels come from one place, `labels_from_spans`: every template renders text plus the
character spans of assistant answers (and their end-of-turn marker), and a token is trained on iff
it overlaps such a span. Nothing re-counts tokenised lengths, so labels cannot drift off the text.

Token ids follow LLaVA's `tokenizer_image_token` for our own templates: BOS as an id, then the text
cut at `<image>` and each piece tokenised as a fresh string, so the first word keeps its SentencePiece
space marker exactly as in LLaVA's `preprocess_plain` / `preprocess_v1`.
"""
from __future__ import annotations

import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler

from datagen.errors import InputError
from datagen.files.jsonl import read_lines

from datagen.formats.records import CHAT_ROLES, IMAGE_TOKEN, check_llava_turns
from datagen.teachers.vision import open_image

log = logging.getLogger("datagen.train")
IGNORE = -100
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


class DataError(InputError, ValueError):
    """Unusable data file; the CLI prints it as one line and exits 2."""


def load_records(path: str) -> list[dict]:
    """A JSON array or JSONL of LLaVA records (schemas/instruct_record.schema.json)."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a BOM, as some editors write one, is no part of the data
    except UnicodeDecodeError as e:
        raise DataError(f"--data {path}: not UTF-8 text (byte {e.start}); pass a JSON or JSONL file of records") from None
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"--data {path}: broken JSON at line {e.lineno} column {e.colno}; fix or regenerate the file") from None
    else:
        records = []
        # Lines end at \n only: U+2028 inside an answer (export writes text as it is) stays in its record.
        for line in read_lines(io.BytesIO(data)):
            if line.problem is not None:
                raise DataError(f"--data {path}: broken JSON at line {line.number} ({line.problem}); fix or regenerate the file")
            records.append(line.value)
    if not records or not all(isinstance(r, dict) for r in records):
        raise DataError(f"--data {path}: expected a non-empty list of record objects")
    return records


def record_turns(record: dict) -> list[tuple[str, str]]:
    """Validated (role, text) turns with <image> moved to the front of the first question, as LLaVA does."""
    convs = record.get("conversations")
    if not isinstance(convs, list):
        raise ValueError("conversations must be a list of turns")
    spoken = []
    for i, turn in enumerate(convs):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise ValueError(f"turn {i} must be an object with a string value")
        spoken.append((turn.get("from"), turn["value"]))
    has_image = bool(record.get("image"))
    check_llava_turns(spoken, has_image)  # the same rules as the records datagen writes
    turns = [(CHAT_ROLES[speaker], value) for speaker, value in spoken]
    if has_image:
        turns[0] = ("user", IMAGE_TOKEN + "\n" + turns[0][1].replace(IMAGE_TOKEN, "").strip())
    return turns


def render(template: str, turns: list[tuple[str, str]], tokenizer, generate: bool = False):
    """Text and assistant spans. With generate=True the last turn must be the user's and the text
    ends where the model should start answering."""
    bos, eos = tokenizer.bos_token or "", tokenizer.eos_token
    spans: list[tuple[int, int]] = []
    if template == "plain":
        # Stage 1: the image, then the caption; the instruction is dropped (LLaVA's "plain").
        text = bos + (IMAGE_TOKEN if IMAGE_TOKEN in turns[0][1] else "")
        if not generate:
            spans.append((len(text), len(text) + len(turns[1][1]) + 1))
            text += turns[1][1] + "\n"
        return text, spans
    if template == "vicuna_v1":
        text = bos + VICUNA_SYSTEM + " "
        for role, value in turns:
            if role == "user":
                text += "USER: " + value + " ASSISTANT:"
            else:
                # The space after "ASSISTANT:" belongs to the answer: generation prompts end at the colon.
                spans.append((len(text), len(text) + 1 + len(value) + len(eos)))
                text += " " + value + eos
        return text, spans
    if template == "chat":
        return _render_chat(turns, tokenizer, generate)
    raise ValueError(f"unknown template {template!r}")


def _render_chat(turns, tokenizer, generate):
    """The tokenizer's own template. An answer's span runs from where the generation prompt ends to
    where the rendering with that answer ends, so it includes the template's end-of-turn marker."""
    if not tokenizer.chat_template:
        raise DataError("--template chat: this tokenizer has no chat template; use --template vicuna_v1")
    msgs = [{"role": r, "content": v} for r, v in turns]

    def fmt(messages, gen):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

    text = fmt(msgs, generate)
    spans = []
    for i, (role, _) in enumerate(turns):
        if role == "assistant":
            before, upto = fmt(msgs[:i], True), fmt(msgs[: i + 1], False)
            if not (text.startswith(upto) and upto.startswith(before)):
                raise DataError("--template chat: this chat template does not render prefixes stably; use --template vicuna_v1")
            spans.append((len(before), len(upto)))
    return text, spans


def labels_from_spans(ids: list[int], offsets: list[tuple[int, int]], spans) -> list[int]:
    return [
        t if any(s < e_tok and s_tok < e for s, e in spans) else IGNORE
        for t, (s_tok, e_tok) in zip(ids, offsets)
    ]


def expand_image_tokens(ids, labels, image_token_id: int, n_image: int):
    """Each <image> id becomes n_image placeholders (never trained on) for the projected patches."""
    out_ids: list[int] = []
    out_labels: list[int] = []
    for t, l in zip(ids, labels):
        if t == image_token_id:
            out_ids += [image_token_id] * n_image
            out_labels += [IGNORE] * n_image
        else:
            out_ids.append(t)
            out_labels.append(l)
    return out_ids, out_labels


class Skip(Exception):
    """A record that cannot be trained on: a short kind (for the summary count) and the details."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


def _encode_piece(text: str, start: int, tokenizer, marks: list[tuple[int, int]]):
    """Ids and absolute offsets of text[start:...] tokenised as one string. Only the template's own
    control tokens (`marks`, absolute char ranges) may become special ids: when the teacher's text
    holds a literal one (say "</s>"), the piece is cut at the marks and the text between them is
    tokenised with special-token matching off."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    special = set(tokenizer.all_special_ids)
    stray = any(t in special and (o[0] + start, o[1] + start) not in marks
                for t, o in zip(enc["input_ids"], enc["offset_mapping"]))
    if not stray:
        return enc["input_ids"], [(s + start, e + start) for s, e in enc["offset_mapping"]]
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    cursor = start
    inside = sorted(m for m in marks if start <= m[0] and m[1] <= start + len(text))
    for m_start, m_end in inside + [(start + len(text), start + len(text))]:
        if m_start > cursor:
            part = tokenizer(text[cursor - start : m_start - start], add_special_tokens=False,
                             return_offsets_mapping=True, split_special_tokens=True)
            ids += part["input_ids"]
            offsets += [(s + cursor, e + cursor) for s, e in part["offset_mapping"]]
        if m_end > m_start:
            ids.append(tokenizer.convert_tokens_to_ids(text[m_start - start : m_end - start]))
            offsets.append((m_start, m_end))
        cursor = m_end
    return ids, offsets


def encode(template: str, text: str, spans, tokenizer):
    """Token ids and char offsets of a rendered text.

    `chat` texts are the LLM's own rendering and are tokenised as one string, as its template expects.
    Ours start with BOS (one id, never text) and are cut at `<image>`, LLaVA's way; the end-of-turn
    marker that closes each answer span is the only other control token."""
    if template == "chat":
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return enc["input_ids"], enc["offset_mapping"]
    bos = tokenizer.bos_token or ""
    eos = tokenizer.eos_token
    marks = [(end - len(eos), end) for _, end in spans if text[end - len(eos) : end] == eos]
    ids: list[int] = [tokenizer.bos_token_id] if bos else []
    offsets: list[tuple[int, int]] = [(0, len(bos))] if bos else []
    cursor = len(bos)
    for k, piece in enumerate(text[len(bos):].split(IMAGE_TOKEN)):
        if k:
            ids.append(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
            offsets.append((cursor, cursor + len(IMAGE_TOKEN)))
            cursor += len(IMAGE_TOKEN)
        if piece:
            piece_ids, piece_offsets = _encode_piece(piece, cursor, tokenizer, marks)
            ids += piece_ids
            offsets += piece_offsets
        cursor += len(piece)
    return ids, offsets


def tokenize_record(turns, template, tokenizer, image_token_id: int, n_image: int, max_length: int):
    if template == "chat":
        # The LLM's template text is tokenised in one piece, so a literal control token in a turn
        # would become one: such a record is skipped rather than trained on.
        literal = sorted({t for t in tokenizer.all_special_tokens if t != IMAGE_TOKEN for _, v in turns if t in v})
        if literal:
            raise Skip("control token in text", f"{literal} would be read as control tokens by --template chat")
    text, spans = render(template, turns, tokenizer)
    input_ids, offsets = encode(template, text, spans, tokenizer)
    labels = labels_from_spans(input_ids, offsets, spans)
    ids, lab = expand_image_tokens(input_ids, labels, image_token_id, n_image)
    if len(ids) > max_length:
        # Truncation never cuts through the image placeholders: the merge would then fail.
        last_image = max((i for i, t in enumerate(ids) if t == image_token_id), default=-1)
        if last_image >= max_length:
            raise Skip("too long for its image", f"image tokens end at {last_image + 1} > --max-length {max_length}")
        ids, lab = ids[:max_length], lab[:max_length]
    if all(l == IGNORE for l in lab):
        raise Skip("no answer tokens", f"none left within --max-length {max_length}")
    return ids, lab


def safe_image_path(folder: Path, name: object) -> Path:
    if not isinstance(name, str):
        raise Skip("malformed record", f"image must be a file name (a string), not {type(name).__name__}")
    path = (folder / name).resolve()
    if not path.is_relative_to(folder):
        raise Skip("image path escapes --image-folder", repr(name))
    if not path.is_file():
        raise Skip("missing image", str(path))
    return path


# The processor wants ~336 px; a JPEG this much larger decodes at a reduced scale (libjpeg's DCT scaling) instead.
DECODE_SIDE = 1024


def load_image(path: Path, processor, aspect: str) -> torch.Tensor:
    from PIL import Image

    # A decompression bomb (a small PNG claiming 144 Mpx takes gigabytes decoded) is refused from its header.
    with open_image(path) as im:
        if max(im.size) > 2 * DECODE_SIDE:
            scale = DECODE_SIDE / max(im.size)
            im.draft("RGB", (math.ceil(im.width * scale), math.ceil(im.height * scale)))
        im = im.convert("RGB")
    if aspect == "pad":
        # LLaVA-1.5: pad to a square with the processor's mean colour so nothing is cropped away.
        side = max(im.size)
        fill = tuple(int(255 * m) for m in processor.image_mean)
        square = Image.new("RGB", (side, side), fill)
        square.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
        im = square
    return processor(images=im, return_tensors="pt")["pixel_values"][0]


@dataclass
class Example:
    id: str
    input_ids: list[int]
    labels: list[int]
    image: Path | None


class SupervisedDataset(Dataset):
    """Tokenises every record up front, so bad records are reported before step one and the
    length-grouped sampler knows exact lengths."""

    def __init__(self, records, image_folder, tokenizer, template, image_token_id, n_image, max_length,
                 image_processor, image_aspect="pad", feature_cache=None):
        folder = Path(image_folder).resolve()
        self.processor, self.aspect, self.cache = image_processor, image_aspect, feature_cache
        self.examples: list[Example] = []
        self.skipped: dict[str, int] = {}
        for n, rec in enumerate(records):
            rid = str(rec.get("id", f"#{n}"))
            try:
                try:
                    turns = record_turns(rec)
                except ValueError as e:
                    raise Skip("malformed record", str(e)) from None
                image = safe_image_path(folder, rec["image"]) if rec.get("image") else None
                ids, labels = tokenize_record(turns, template, tokenizer, image_token_id, n_image, max_length)
            except Skip as e:
                self._skip(rid, e)
                continue
            self.examples.append(Example(rid, ids, labels, image))
        if self.skipped:
            log.warning("skipped %d of %d records: %s", sum(self.skipped.values()), len(records), self.skipped)
        if not self.examples:
            raise DataError("no trainable records left after skipping; see the warnings above")

    def _skip(self, rid: str, why: Skip) -> None:
        self.skipped[why.kind] = self.skipped.get(why.kind, 0) + 1
        log.warning("record %s skipped: %s", rid, why)

    @property
    def lengths(self) -> list[int]:
        return [len(e.input_ids) for e in self.examples]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        # An image that fails to decode mid-run is reported and replaced by the next record, so a
        # multi-hour run never dies on one bad file.
        for k in range(len(self.examples)):
            ex = self.examples[(i + k) % len(self.examples)]
            item = {"input_ids": torch.tensor(ex.input_ids), "labels": torch.tensor(ex.labels)}
            if ex.image is None:
                return item
            try:
                if self.cache is not None:
                    item["image_features"] = self.cache.get(ex.image)
                else:
                    item["pixel_values"] = load_image(ex.image, self.processor, self.aspect)
                return item
            except Exception as e:  # noqa: BLE001 - any decoder error means "unreadable"
                self._skip(ex.id, Skip("unreadable image", f"{ex.image} ({type(e).__name__}: {e})"))
        raise DataError("no readable images left")


class Collator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict:
        pad = torch.nn.utils.rnn.pad_sequence
        ids = pad([x["input_ids"] for x in items], batch_first=True, padding_value=self.pad_id)
        batch = {
            "input_ids": ids,
            "labels": pad([x["labels"] for x in items], batch_first=True, padding_value=IGNORE),
            "attention_mask": pad([torch.ones_like(x["input_ids"]) for x in items], batch_first=True),
        }
        # Text-only and image records mix freely: features are matched to <image> positions in order.
        for key in ("pixel_values", "image_features"):
            found = [x[key] for x in items if key in x]
            if found:
                batch[key] = torch.stack(found)
        return batch


class LengthGroupedSampler(Sampler):
    """Batches of indices: shuffled, then sorted by length inside mega-batches, so each batch holds
    similar lengths and padding stays small. The order is a pure function of (seed, epoch), so resume
    can replay it; yielding whole batches (a batch sampler) lets the Trainer's set_epoch reach it
    under DDP sharding too."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group: bool = True, mega: int = 50,
                 granule: int = 16):
        self.lengths, self.batch_size, self.seed, self.group, self.mega = lengths, batch_size, seed, group, mega
        self.granule = granule
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        if not self.group:
            return iter([perm[b : b + self.batch_size] for b in range(0, len(perm), self.batch_size)])
        size = self.batch_size * self.mega
        batches = []
        for m in range(0, len(perm), size):
            # Sort by length bucket, not exact length: equal lengths often mean equal answers
            # ("Red." vs "Blue."), and batches of one answer teach the batch, not the image.
            chunk = sorted(perm[m : m + size], key=lambda i: -(self.lengths[i] // self.granule))
            batches += [chunk[b : b + self.batch_size] for b in range(0, len(chunk), self.batch_size)]
        order = torch.randperm(len(batches), generator=g).tolist()
        return iter([batches[b] for b in order])
