"""An item (tasks.registry.ItemKey: an image, a task, which of its items) -> its request and its record, each a pure
function of the inputs; the first item of an image (nth 0) has the request and record it always had."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

from pydantic import BaseModel

from datagen.source.coco import ImageAnnotations, ObjectStats
from datagen.source.context import ContextKind, render_context
from datagen.tasks.grounded import Probe, brief
from datagen.tasks.prompts import InstructionList, PromptPack, build_messages
from datagen.formats.records import GeneratedRecord, RecordMeta, Reject, RejectReason, TeacherInfo, Turn, place_image_token
from datagen.tasks.registry import ItemKey, task_spec
from datagen.teachers.request_shape import RequestShape
from datagen.teachers.teacher import ChatReply, ChatRequest
from datagen.teachers.vision import EncodedImage, See, user_content


def item_seed(seed: int, image_id: int, task: str, purpose: str, nth: int = 0) -> int:
    """A seed per item and purpose, so nothing depends on the order in which answers come back; an image's later
    items (nth > 0) get seeds of their own, its first the one it always had."""
    if nth:
        purpose = f"{purpose}#{nth}"
    digest = hashlib.blake2b(f"{seed}:{image_id}:{task}:{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # 63 bits: fits every server's integer seed


class SamplingSettings(BaseModel):
    model: str
    temperature: float
    max_tokens: int
    seed: int
    contexts: dict[str, ContextKind]
    shape: RequestShape = RequestShape()


def plan_item(image: ImageAnnotations, key: ItemKey, stats: Callable[[], ObjectStats], seed: int) -> list[Probe] | None:
    """A grounded task's planned questions for the item ([] when none may be asked); None for other tasks."""
    planner = task_spec(key.task).planner
    if planner is None:
        return None
    return planner(image, stats, random.Random(item_seed(seed, image.image_id, key.task, "plan", key.nth)))


def build_request(
    image: ImageAnnotations, task: str, pack: PromptPack, sampling: SamplingSettings, see: See = "text",
    picture: EncodedImage | None = None, nth: int = 0, probes: list[Probe] | None = None, response_format: dict | None = None,
) -> ChatRequest:
    """The request of the `nth` item of `task` for `image` (the first item's is the one it always was). `probes`: a
    grounded task's plan, shown after the context (also to a teacher that sees only the image)."""
    context = render_context(image, sampling.contexts[task]) if see != "image" else ""
    if probes:
        context = "\n\n".join(part for part in (context, brief(probes)) if part)
    return ChatRequest(
        model=sampling.model,
        messages=build_messages(pack, user_content(see, context, picture)),
        temperature=sampling.temperature,
        max_tokens=sampling.max_tokens,
        seed=item_seed(sampling.seed, image.image_id, task, "teacher", nth),
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
    nth: int = 0,
) -> GeneratedRecord:
    """The task's form makes the turns: a prose answer gets a question drawn from `instructions`, Question/Answer
    pairs are the turns as they are. The record's id names the item (TaskSpec.record_id)."""
    spec = task_spec(task)
    key = ItemKey(image.image_id, task, nth)
    rng = random.Random(item_seed(seed, image.image_id, task, "record", key.nth))
    pairs = spec.form.pairs(task, content, instructions, rng)
    turns: list[Turn] = []
    for index, (question, answer) in enumerate(pairs):
        turns.append(Turn(speaker="human", value=place_image_token(question, rng) if index == 0 else question))
        turns.append(Turn(speaker="gpt", value=answer))
    return GeneratedRecord(id=spec.record_id(key), image=image.file_name, conversations=turns, meta=meta)


def build_reject(
    image: ImageAnnotations, task: str, reason: RejectReason, detail: str, reply: ChatReply, meta: RecordMeta, nth: int = 0
) -> Reject:
    return Reject(
        id=task_spec(task).record_id(ItemKey(image.image_id, task, nth)),
        image=image.file_name,
        task=task,
        reason=reason,
        detail=detail,
        raw=reply.text or reply.refusal or "",
        finish_reason=reply.finish_reason,
        meta=meta,
    )
