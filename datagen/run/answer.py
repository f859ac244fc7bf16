"""One item's handling: its request -> the teacher -> parse and validate -> a record, a reject or a skip.

Nothing here writes or counts: `answer_item` returns the outcome, and the job appends and tallies it. So one item
can be followed, and tested, with any `Teacher`, a server or none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from datagen.formats.records import GeneratedRecord, Reject, SkipReason, Usage
from datagen.quality.grounding import ground_record
from datagen.quality.parse import Rejected
from datagen.run.items import build_meta, build_record, build_reject, length_retry
from datagen.run.plan import Plan
from datagen.source.coco import ImageAnnotations
from datagen.tasks.grounded import verify_pairs
from datagen.tasks.registry import ItemKey, task_spec
from datagen.tasks.structured import fits_schema, parse_structured
from datagen.teachers.teacher import ChatReply, ChatRequest, RequestRefused, RetryableError, Teacher
from datagen.teachers.vision import EncodedImage


@dataclass
class Outcome:
    """What became of one item: exactly one of a record, a reject or a skip reason; and the answers it paid for."""

    key: ItemKey
    record: GeneratedRecord | None = None
    reject: Reject | None = None
    skip: SkipReason | None = None
    paid: list[Usage] = field(default_factory=list)  # a cut answer asked again is paid for twice
    reasked: bool = False  # --structured: its first reply was not in the schema, so it was asked once more


async def answer_item(
    plan: Plan, teacher: Teacher, image: ImageAnnotations, key: ItemKey, request: ChatRequest, picture: EncodedImage | None = None
) -> Outcome:
    task, see = key.task, plan.options.see
    pack = plan.packs[task]
    outcome = Outcome(key)
    try:
        reply = await teacher.complete(request)
        retry = length_retry(request, reply, plan.options.length_retry_max_tokens)
        if retry is not None:
            # One more try with room to finish; the answer then comes from the larger request (and its cache key).
            outcome.paid.append(reply.usage)  # the cut answer was paid for too
            request = retry
            reply = await teacher.complete(request)
        if plan.options.structured and reply.refusal is None and not fits_schema(task_spec(task), reply.text, reply.finish_reason):
            # One re-ask, with another seed so that neither the cache nor a seeded server gives the same reply.
            outcome.paid.append(reply.usage)
            outcome.reasked = True
            request = request.model_copy(update={"seed": request.seed + 1})
            reply = await teacher.complete(request)
    except RetryableError:
        # Not written anywhere: a rerun asks again, after the transient trouble has passed.
        outcome.skip = "request_failed"
        return outcome
    except RequestRefused as refused:
        # A reject, so a rerun does not ask again: the server would refuse this item the same way.
        reply = ChatReply(text="", finish_reason=None, usage=Usage(prompt_tokens=0, completion_tokens=0))
        meta = build_meta(image, task, pack, plan.sampling, teacher.info, request, reply, see, picture)
        outcome.reject = build_reject(image, task, refused.reason, str(refused), reply, meta, key.nth)
        return outcome
    outcome.paid.append(reply.usage)
    meta = build_meta(image, task, pack, plan.sampling, teacher.info, request, reply, see, picture)
    try:
        if reply.refusal is not None:
            raise Rejected("refusal", f"structured refusal: {reply.refusal[:80]!r}")
        spec = task_spec(task)
        if plan.options.structured:
            content = parse_structured(spec, reply.text, reply.finish_reason, see, plan.examples[task])
        else:
            content = spec.parse(reply.text, reply.finish_reason, see, plan.examples[task])
        probes = plan.probes(image, key)
        if probes is not None and not isinstance(content, str):
            verify_pairs(probes, content, image)
        instructions = plan.instructions[spec.instructions] if spec.instructions else None
        record = build_record(image, task, content, meta, instructions, plan.sampling.seed, key.nth)
        ground_record(record, image, plan.options.reject_unsupported)
    except Rejected as rejection:
        outcome.reject = build_reject(image, task, rejection.reason, rejection.detail, reply, meta, key.nth)
    except ValidationError as error:  # an answer that parsed but breaks the LLaVA record rules
        outcome.reject = build_reject(image, task, "unparseable", error.errors()[0]["msg"], reply, meta, key.nth)
    else:
        outcome.record = record
    return outcome
