"""What a `generate` run asks, before anything is asked: its inputs checked and loaded (prompt packs, instruction
lists, the source), the sampling settings and fingerprint, the selected images, and the items still pending.

A plan sends nothing and writes nothing but the source's snapshot: a live run, a batch, a requests file and a dry-run
estimate all plan alike, so they ask alike.
"""

from __future__ import annotations

from collections.abc import Iterator

from datagen.errors import InputError
from datagen.formats.records import SkipReason, TeacherInfo
from datagen.run.items import SamplingSettings, build_request, plan_item
from datagen.run.options import GenerateOptions
from datagen.run.output_folder import SOURCE_SNAPSHOT_FILE
from datagen.run.tally import Tally
from datagen.source.coco import CocoSource, ImageAnnotations
from datagen.tasks.grounded import Probe
from datagen.tasks.prompts import InstructionList, PromptPack, load_instructions
from datagen.tasks.registry import ItemKey, task_spec
from datagen.tasks.structured import response_format
from datagen.teachers.teacher import ChatRequest
from datagen.teachers.vision import EncodedImage, encode_image, image_path


def curated_ids(image_ids: list[int], options: GenerateOptions) -> list[int]:
    """The source's images less the excluded ones, and only the chosen ones when a selection chose (datagen/curate/)."""
    kept = [image_id for image_id in image_ids if image_id not in options.exclude_ids] if options.exclude_ids else image_ids
    if options.chosen_ids is None:
        return kept
    chosen = set(options.chosen_ids)
    return [image_id for image_id in kept if image_id in chosen]


def select_image_ids(image_ids: list[int], shard: tuple[int, int] | None, limit: int | None) -> list[int]:
    """Shard i/n takes every n-th image of the sorted ids, so n machines split a run with no overlap."""
    if shard is not None:
        index, count = shard
        image_ids = image_ids[index::count]
    return image_ids if limit is None else image_ids[:limit]


class Plan:
    """The inputs of one `generate` over one output folder, and the items they yield."""

    def __init__(self, options: GenerateOptions, teacher: TeacherInfo) -> None:
        self.options = options
        # A teacher shown only the image is sent no boxes, so it needs no instances file.
        needs_boxes = [task for task in options.tasks if options.context_of(task) == "captions+boxes" and options.see != "image"]
        if needs_boxes and options.instances is None:
            raise InputError(
                f"--instances is required: tasks {', '.join(needs_boxes)} show object boxes; pass the COCO instances file"
                " or --context TASK=captions"
            )
        grounded = [task for task in options.tasks if task_spec(task).planner is not None]
        if grounded and options.instances is None:  # whatever the teacher is shown, their questions come from the boxes
            raise InputError(f"--instances is required: tasks {', '.join(grounded)} ask questions the COCO boxes decide; pass the instances file")
        if options.see != "text" and options.images is None:
            raise InputError(f"--see {options.see} needs --images DIR, the folder holding the images named in the captions file")
        if options.images is not None and not options.images.is_dir():
            raise InputError(f"--images {options.images}: folder not found; pass the folder holding the COCO images")
        vision = options.see != "text"
        self.packs: dict[str, PromptPack] = {task: task_spec(task).load_pack(options.prompts, vision) for task in options.tasks}
        # What each task's replies must not copy: the examples of the pack actually sent, ours or the user's --prompts.
        self.examples = {task: task_spec(task).examples(pack) for task, pack in self.packs.items()}
        # "detail" always: its hash has been a fingerprint part since the first manifest, whichever tasks ran.
        lists = {"detail", *(name for name in (task_spec(task).instructions for task in options.tasks) if name is not None)}
        self.instructions: dict[str, InstructionList] = {name: load_instructions(name, options.prompts) for name in sorted(lists)}
        self.teacher = teacher
        self.source = CocoSource(options.captions, options.instances, snapshot=options.out / SOURCE_SNAPSHOT_FILE)
        self.sampling = SamplingSettings(
            model=teacher.model,
            temperature=options.temperature,
            max_tokens=options.max_completion_tokens or options.max_tokens,
            seed=options.seed,
            contexts={task: options.context_of(task) for task in options.tasks},
            shape=options.request_shape(),
        )
        # --structured: each task's reply schema, sent with its every request.
        self.response_formats = {task: response_format(task_spec(task), options.structured_form) for task in options.tasks} if options.structured else {}
        self.fingerprint_parts = self._fingerprint_parts()
        self.selected_ids: list[int] = []
        self.selected: set[int] = set()

    def _fingerprint_parts(self) -> dict[str, object]:
        # The settings' own parts are the fields marked `fingerprint` in datagen/run/options.py.
        parts = self.options.fingerprint_parts({
            "captions_sha256": self.source.captions_sha256,
            "instances_sha256": self.source.instances_sha256,
            "teacher": self.teacher.kind,
            "model": self.sampling.model,
            "max_tokens": self.sampling.max_tokens,
            "detail_instructions": self.instructions["detail"].sha256,
        })
        for name, instructions in self.instructions.items():
            if name != "detail":
                parts[f"instructions:{name}"] = instructions.sha256
        for task in self.options.tasks:
            parts[f"prompt_pack:{task}"] = self.packs[task].sha256
            parts[f"context:{task}"] = self.sampling.contexts[task]
        return parts

    def select(self) -> None:
        """The images this run covers (--shard, --limit); with --see image|both, some must be in --images."""
        self.selected_ids = select_image_ids(curated_ids(self.source.image_ids, self.options), self.options.shard, self.options.limit)
        self.selected = set(self.selected_ids)
        self._check_images()

    def _check_images(self) -> None:
        if self.options.see == "text" or not self.selected_ids:
            return
        folder = self.options.images
        assert folder is not None  # Plan() refuses --see image|both without --images
        if not any((folder / self.source.file_name(image_id)).is_file() for image_id in self.selected_ids):
            example = self.source.file_name(self.selected_ids[0])
            raise InputError(
                f"--images {folder}: none of the {len(self.selected_ids)} selected images is there (e.g. {example});"
                " pass the folder holding the files named in the captions file"
            )

    def requested(self) -> dict[str, int]:
        """Per task, the items the selected images yield: one per image and sample for a whole-image task."""
        return {task: len(self.selected_ids) * self.options.samples_per_image for task in self.options.tasks}

    def pending(self, tally: Tally, unanswered: dict[ItemKey, SkipReason] | None = None) -> Iterator[tuple[ImageAnnotations, ItemKey]]:
        """The items `tally` has no outcome for, in image order; those that cannot be asked are skipped into it:
        an image without a usable caption, a grounded item with nothing its boxes let us ask (unaskable), or
        (`unanswered`) an item the answers' source ended without."""
        unanswered = unanswered or {}
        samples = self.options.samples_per_image
        for image_id in self.selected_ids:
            if all(tally.has(ItemKey(image_id, task, index)) for task in self.options.tasks for index in range(samples)):
                continue
            image = self.source.image(image_id)
            for task in self.options.tasks:
                if image is None:
                    keys = [ItemKey(image_id, task, index) for index in range(samples)]
                else:
                    keys = task_spec(task).items(image, samples)
                for key in keys:
                    if tally.has(key):
                        continue
                    reason: SkipReason | None = "no_usable_caption" if image is None else unanswered.get(key)
                    if reason is None and image is not None and self.probes(image, key) == []:
                        reason = "unaskable"
                    if reason is not None:
                        tally.skip(key.task, reason)
                    elif image is not None:
                        yield image, key

    def request_for(self, image: ImageAnnotations, key: ItemKey) -> tuple[ChatRequest, EncodedImage | None]:
        """The item's request, with its image encoded now (one at a time); ImageProblem when it cannot be shown."""
        picture = None
        if self.options.see != "text":
            assert self.options.images is not None  # Plan() refuses --see image|both without --images
            picture = encode_image(image_path(self.options.images, image.file_name), self.options.image_max_side)
        probes = self.probes(image, key)
        request = build_request(
            image, key.task, self.packs[key.task], self.sampling, self.options.see, picture, key.nth, probes, self.response_formats.get(key.task)
        )
        return request, picture

    def probes(self, image: ImageAnnotations, key: ItemKey) -> list[Probe] | None:
        """A grounded item's questions, planned alike for its request and for the check of its answer (None for a
        task that plans none)."""
        return plan_item(image, key, self.source.object_stats, self.sampling.seed)
