"""An item is one (image, task) pair: its request is a pure function of the inputs, and so is its record."""

from __future__ import annotations

import hashlib
import random

from pydantic import BaseModel

from datagen.source.coco import ImageAnnotations
from datagen.source.context import ContextKind, render_context
from datagen.tasks.prompts import InstructionList, PromptPack, build_messages
from datagen.formats.records import GeneratedRecord, RecordMeta, Reject, RejectReason, TeacherInfo, Turn, place_image_token, record_id
from datagen.teachers.request_shape import RequestShape
from datagen.teachers.teacher import ChatReply, ChatRequest
from datagen.teachers.vision import EncodedImage, See, user_content


def item_seed(seed: int, image_id: int, task: str, purpose: str) -> int:
    """A seed per item and purpose, so nothing depends on the order in which answers come back."""
    digest = hashlib.blake2b(f"{seed}:{image_id}:{task}:{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # 63 bits: fits every server's integer seed


class SamplingSettings(BaseModel):
    model: str
    temperature: float
    max_tokens: int
    seed: int
    contexts: dict[str, ContextKind]
    shape: RequestShape = RequestShape()


def build_request(
    image: ImageAnnotations, task: str, pack: PromptPack, sampling: SamplingSettings, see: See = "text", picture: EncodedImage | None = None,
    response_format: dict | None = None,
) -> ChatRequest:
    context = render_context(image, sampling.contexts[task]) if see != "image" else ""
    return ChatRequest(
        model=sampling.model,
        messages=build_messages(pack, user_content(see, context, picture)),
        temperature=sampling.temperature,
        max_tokens=sampling.max_tokens,
        seed=item_seed(sampling.seed, image.image_id, task, "teacher"),
        shape=sampling.shape,
        response_format=response_format,
    )


def length_retry(request: ChatRequest, reply: ChatReply, retry_max_tokens: int | None) -> ChatRequest | None:
    """The one more try an answer cut at max_tokens earns (--retry-length): the same request with room to finish,
    or None when it earns none. Live runs, batches and requests files all ask this, so they ask alike."""
    if reply.finish_reason == "length" and (retry_max_tokens or 0) > request.max_tokens:
        return request.model_copy(update={"max_tokens": retry_max_tokens})
    return None


def build_meta(
    image: ImageAnnotations,
    task: str,
    pack: PromptPack,
    sampling: SamplingSettings,
    teacher: TeacherInfo,
    request: ChatRequest,
    reply: ChatReply,
    see: See = "text",
    picture: EncodedImage | None = None,
) -> RecordMeta:
    shows_context = see != "image"
    shows_boxes = shows_context and sampling.contexts[task] == "captions+boxes"
    return RecordMeta(
        task=task,
        teacher=teacher,
        prompt_hash=pack.sha256,
        image_id=image.image_id,
        caption_ids=image.caption_ids if shows_context else [],
        box_ids=[box.annotation_id for box in image.boxes] if shows_boxes else [],
        usage=reply.usage,
        request_key=request.key(),
        finish_reason=reply.finish_reason,
        # Text runs leave these out (None is not written), so their records stay as they always were.
        see=see if see != "text" else None,
        image_sha256=picture.sha256 if picture is not None else None,
    )


def build_record(
    image: ImageAnnotations,
    task: str,
    content: list[tuple[str, str]] | str,
    meta: RecordMeta,
    instructions: InstructionList | None,
    seed: int,
) -> GeneratedRecord:
    """A prose answer (str) gets a question drawn from `instructions`; Question/Answer pairs are the turns as they are."""
    rng = random.Random(item_seed(seed, image.image_id, task, "record"))
    if isinstance(content, str):
        if instructions is None:
            raise ValueError(f"task {task}: a prose answer needs the instruction list its question is drawn from")
        pairs = [(rng.choice(instructions.lines), content)]
    else:
        pairs = content
    turns: list[Turn] = []
    for index, (question, answer) in enumerate(pairs):
        turns.append(Turn(speaker="human", value=place_image_token(question, rng) if index == 0 else question))
        turns.append(Turn(speaker="gpt", value=answer))
    return GeneratedRecord(id=record_id(image.image_id), image=image.file_name, conversations=turns, meta=meta)


def build_reject(image: ImageAnnotations, task: str, reason: RejectReason, detail: str, reply: ChatReply, meta: RecordMeta) -> Reject:
    return Reject(
        id=record_id(image.image_id),
        image=image.file_name,
        task=task,
        reason=reason,
        detail=detail,
        raw=reply.text or reply.refusal or "",
        finish_reason=reply.finish_reason,
        meta=meta,
    )
