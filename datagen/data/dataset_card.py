"""The `README.md` dataset card that `generate`, `merge` and `export` write next to the data.

Its YAML header is what `datasets.load_dataset(FOLDER)` reads: `configs` name the files of each split and
`dataset_info.features` types every column. The features are derived from the pydantic models, so a field
added to a record model is typed in the card without touching this file. Typing matters: `meta.box_ids` is
`[]` in every conversation record, which Arrow would otherwise type as a list of nulls and refuse to load
next to the detail records.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel

from datagen.formats.manifest import manifest_or_none
from datagen.formats.metrics import shown
from datagen.files.jsonl import atomic_file
from datagen.run.output_folder import REJECTS_FILE
from datagen.formats.records import GeneratedRecord, InstructRecord, Reject
from datagen.tasks.registry import TASKS

CARD_FILE = "README.md"
# Marks a card as ours (only ours are ever overwritten) and carries the exports it lists across rewrites.
_STATE_OPEN = "<!-- datagen-card "
_STATE_CLOSE = " -->"

_JSON_TO_ARROW = {"string": "string", "integer": "int64", "number": "float64", "boolean": "bool"}


class UntypeableField(TypeError):
    """A model field with no fixed Arrow type (a free-form mapping, a union of types)."""


def features_of(model: type[BaseModel]) -> list[dict]:
    """The model's fields as a Hugging Face `dataset_info.features` list, from its JSON Schema (aliases used)."""
    schema = model.model_json_schema(by_alias=True)
    definitions = schema.get("$defs", {})
    return _struct_fields(schema, definitions, model.__name__)


def _struct_fields(schema: dict, definitions: dict, where: str) -> list[dict]:
    return [{"name": name, **_feature(field, definitions, f"{where}.{name}")} for name, field in schema["properties"].items()]


def _feature(schema: dict, definitions: dict, where: str) -> dict:
    """One field as a feature entry without its name: `dtype: T`, `list: ...` or `struct: [...]`."""
    schema = _resolve(schema, definitions, where)
    kind = schema.get("type")
    if kind in _JSON_TO_ARROW:
        return {"dtype": _JSON_TO_ARROW[kind]}
    if kind == "array" and "items" in schema:
        item = _feature(schema["items"], definitions, f"{where}[]")
        # The card's shorthand: a list of a plain type is `list: int64`, a list of structs lists their fields.
        return {"list": item.get("dtype") or item.get("struct") or item}
    if kind == "object" and schema.get("properties"):
        return {"struct": _struct_fields(schema, definitions, where)}
    raise UntypeableField(f"{where}: {json.dumps(schema)[:120]} has no fixed column type; give it a model with named fields")


def _resolve(schema: dict, definitions: dict, where: str) -> dict:
    """Follow `$ref`s and drop the `null` of optional fields: Arrow columns are nullable anyway."""
    while True:
        if "$ref" in schema:
            schema = definitions[schema["$ref"].rsplit("/", 1)[-1]]
        elif "anyOf" in schema or "allOf" in schema:
            options = [option for option in schema.get("anyOf") or schema["allOf"] if option.get("type") != "null"]
            if len(options) != 1:
                raise UntypeableField(f"{where}: a union of {len(options)} types has no single column type")
            schema = options[0]
        elif "const" in schema and "type" not in schema:
            return {"type": {str: "string", bool: "boolean", int: "integer", float: "number"}[type(schema["const"])]}
        else:
            return schema


# -- YAML ------------------------------------------------------------------------------------------------

_PLAIN = re.compile(r"[A-Za-z_][\w.\-/]*")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(value: object, indent: int = 0) -> list[str]:
    """Block-style YAML of nested dicts, lists and scalars (the subset a card header needs)."""
    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{_scalar(key)}:")
                lines += to_yaml(item, indent if isinstance(item, list) else indent + 2)
            else:
                lines.append(f"{pad}{_scalar(key)}: {_scalar(item) if not isinstance(item, (dict, list)) else json.dumps(item)}")
        return lines
    if isinstance(value, list):
        lines = []
        for item in value:
            if isinstance(item, (dict, list)) and item:
                nested = to_yaml(item, indent + 2)
                lines.append(f"{pad}- {nested[0].lstrip()}")
                lines += nested[1:]
            else:
                lines.append(f"{pad}- {_scalar(item) if not isinstance(item, (dict, list)) else json.dumps(item)}")
        return lines
    return [pad + _scalar(value)]


# -- what made the data -------------------------------------------------------------------------------


def run_summary(manifest: dict) -> dict:
    """The provenance a card shows, taken defensively from a manifest of any datagen version."""
    settings = manifest.get("settings") or {}
    sampling = settings.get("sampling") or {}
    source = manifest.get("source") or {}
    return {
        "datagen_version": manifest.get("datagen_version"),
        "status": manifest.get("status"),
        "started_at": manifest.get("started_at"),
        "finished_at": manifest.get("finished_at"),
        "command": manifest.get("command"),
        "teacher": manifest.get("teacher") or {},
        "seed": sampling.get("seed"),
        "temperature": sampling.get("temperature"),
        "max_tokens": sampling.get("max_tokens"),
        "contexts": sampling.get("contexts") or {},
        "prompt_hashes": manifest.get("prompt_hashes") or {},
        "source": {key: source.get(key) for key in ("captions_file", "instances_file", "images", "captions", "boxes")},
        "counts": manifest.get("counts") or {},
        "quality": manifest.get("quality") or {},
        "usage": manifest.get("usage") or {},
        "curation": manifest.get("curation") or {},
        **{metric.name: manifest.get(metric.name) for metric in shown("card")},
    }


# -- writing ------------------------------------------------------------------------------------------


def write_run_card(folder: Path) -> Path | None:
    """The card of a generate (or merge) output folder; None when a README.md not written by datagen is there."""
    manifest = manifest_or_none(folder)
    if manifest is None:
        return None
    return _write(folder, run_summary(manifest), _exports_listed(folder))


def write_export_card(source: Path, out: Path, counts: dict[str, int], jsonl: bool, keep_meta: bool, shuffle: bool, seed: int) -> Path | None:
    """Add the file `export` just wrote to the card of its folder (the generate folder itself, or any other)."""
    folder = out.parent
    # Exported into the run's own folder, the card already shows the run; elsewhere the entry carries it.
    manifest = None if folder.resolve() == source.resolve() else manifest_or_none(source)
    entry = {
        "file": out.name,
        "format": "jsonl" if jsonl else "json",
        "meta": keep_meta,
        "shuffle_seed": seed if shuffle else None,
        "records": counts,
        "source": source.name,
        "run": run_summary(manifest) if manifest else None,
    }
    exports = [existing for existing in _exports_listed(folder) if existing.get("file") != out.name] + [entry]
    here = manifest_or_none(folder)
    return _write(folder, run_summary(here) if here else None, exports)


def _exports_listed(folder: Path) -> list[dict]:
    text = _read_card(folder)
    if not text or _STATE_OPEN not in text:
        return []
    state = text.rsplit(_STATE_OPEN, 1)[1].split(_STATE_CLOSE, 1)[0]
    try:
        exports = json.loads(state).get("exports", [])
    except (ValueError, AttributeError):
        return []
    return [entry for entry in exports if isinstance(entry, dict) and (folder / str(entry.get("file", ""))).is_file()]


def _read_card(folder: Path) -> str | None:
    try:
        return (folder / CARD_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def is_foreign_card(folder: Path) -> bool:
    """A README.md someone else wrote: never overwritten."""
    text = _read_card(folder)
    return (folder / CARD_FILE).exists() and (text is None or _STATE_OPEN not in text)


def _write(folder: Path, run: dict | None, exports: list[dict]) -> Path | None:
    if is_foreign_card(folder):
        return None
    path = folder / CARD_FILE
    with atomic_file(path) as handle:
        handle.write(render_card(folder, run, exports))
    return path


def _has_data(path: Path) -> bool:
    # datasets refuses a split whose files hold no rows, so a task with nothing written is left out.
    return path.is_file() and path.stat().st_size > 0


def _config_name(file_name: str) -> str:
    return re.sub(r"[^\w-]+", "_", Path(file_name).stem) or "export"


def card_header(folder: Path, run: dict | None, exports: list[dict]) -> dict:
    configs, infos = [], []
    if run is not None:
        specs = [spec for spec in TASKS.values() if _has_data(folder / spec.file_name)]
        if specs:
            configs.append({"config_name": "default", "data_files": [{"split": spec.name, "path": spec.file_name} for spec in specs]})
            infos.append({"config_name": "default", "features": features_of(GeneratedRecord)})
        if _has_data(folder / REJECTS_FILE):
            configs.append({"config_name": "rejects", "data_files": [{"split": "train", "path": REJECTS_FILE}]})
            infos.append({"config_name": "rejects", "features": features_of(Reject)})
    for entry in exports:
        name = _config_name(entry["file"])
        if run is None and not configs:
            name = "default"  # an export alone in its folder is what load_dataset(folder) should give
        while name in {config["config_name"] for config in configs}:  # e.g. an export named rejects.json
            name += "_export"
        configs.append({"config_name": name, "data_files": [{"split": "train", "path": entry["file"]}]})
        infos.append({"config_name": name, "features": features_of(GeneratedRecord if entry.get("meta") else InstructRecord)})
    teachers = {(entry.get("run") or {}).get("teacher", {}).get("model") for entry in exports} | ({run["teacher"].get("model")} if run else set())
    teachers.discard(None)
    header: dict = {
        "pretty_name": f"{folder.resolve().name} (datagen, teacher {', '.join(sorted(teachers)) or 'unknown'})",
        "language": ["en"],
        "task_categories": ["visual-question-answering", "image-text-to-text"],
        "tags": ["llava", "synthetic", "visual-instruction-tuning", "datagen"],
        "configs": configs,
        "dataset_info": infos,
    }
    return header


def render_card(folder: Path, run: dict | None, exports: list[dict]) -> str:
    header = card_header(folder, run, exports)
    lines = ["---", *to_yaml(header), "---", "", f"# {header['pretty_name']}", ""]
    lines += [
        "LLaVA-Instruct-format visual instruction data written by datagen from COCO captions "
        "and boxes shown to a text-only teacher. Records follow LLaVA-Instruct-150K: `id`, `image` (the COCO file name), "
        "`conversations` (turns `{from: human|gpt, value}`, `<image>` once in the first human turn).",
        "",
    ]
    if run is not None:
        if header["configs"] and header["configs"][0]["config_name"] == "default":
            lines += _loading_run(header)
        lines += _provenance(run, heading="## How it was made")
    for entry in exports:
        # An export of another folder's run brings its own provenance; one of this folder's run shares it.
        lines += _export_section(entry, header, with_provenance=run is None or entry.get("run") is not None)
    state = json.dumps({"exports": exports}, ensure_ascii=False).replace("--", "\\u002d\\u002d")
    lines += ["", f"{_STATE_OPEN}{state}{_STATE_CLOSE}", ""]
    return "\n".join(lines)


def _loading_run(header: dict) -> list[str]:
    splits = [item["split"] for item in header["configs"][0]["data_files"]]
    lines = [
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f"tasks = load_dataset(FOLDER)  # one split per task: {', '.join(splits)}",
        f'everything = load_dataset(FOLDER, split="{"+".join(splits)}")',
    ]
    if any(config["config_name"] == "rejects" for config in header["configs"]):
        lines.append('rejects = load_dataset(FOLDER, "rejects", split="train")  # refused answers with reason and raw text')
    return lines + ["```", ""]


def _teacher_line(teacher: dict) -> str:
    model, kind, mock = teacher.get("model", "unknown"), teacher.get("kind", "unknown"), teacher.get("mock")
    if mock:
        return (
            f"- Teacher: `{model}` (kind `{kind}`), **mock: true** — the answers come from datagen's offline mock teacher, "
            "not a language model. Test data, not training data."
        )
    return f"- Teacher: `{model}` (kind `{kind}`), mock: {'false' if mock is False else 'unknown'}"


def _figure(value: object) -> str:
    return "n/a" if value is None else str(value)


def _count(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else _figure(value)


def _rate(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def _provenance(run: dict, heading: str) -> list[str]:
    source = run.get("source") or {}
    usage = run.get("usage") or {}
    lines = [
        heading,
        "",
        _teacher_line(run.get("teacher") or {}),
        f"- datagen {_figure(run.get('datagen_version'))}, run status `{_figure(run.get('status'))}`, "
        f"{_figure(run.get('started_at'))} to {_figure(run.get('finished_at'))}",
        f"- Seed {_figure(run.get('seed'))}, temperature {_figure(run.get('temperature'))}, max tokens {_figure(run.get('max_tokens'))}",
        f"- Source: {_count(source.get('images'))} images, {_count(source.get('captions'))} captions, "
        f"{_count(source.get('boxes'))} boxes (`{_figure(source.get('captions_file'))}`, `{_figure(source.get('instances_file'))}`)",
        f"- Tokens: {_count(usage.get('prompt_tokens'))} prompt, {_count(usage.get('completion_tokens'))} completion"
        + "".join(f", {key} {_count(value)}" for key, value in usage.items() if key not in ("prompt_tokens", "completion_tokens")),
    ]
    for metric in shown("card"):  # formats/metrics.py: the run's metrics the card shows
        value = run.get(metric.name)
        lines.append(f"- {metric.label[:1].upper()}{metric.label[1:]}: {_reasons(value) if isinstance(value, dict) else _count(value)}")
    if run.get("command"):
        lines.append(f"- Command: `{' '.join(map(str, run['command']))}`")
    lines += _curation_lines(run.get("curation") or {})
    lines += [
        "",
        "| task | prompt pack hash | context | requested | written | rejected | skipped | CHAIR_i | CHAIR_s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    counts, quality = run.get("counts") or {}, run.get("quality") or {}
    for task, task_counts in counts.items():
        task_counts = task_counts if isinstance(task_counts, dict) else {}
        task_quality = quality[task] if isinstance(quality.get(task), dict) else {}
        lines.append(
            f"| {task} | `{_figure(run.get('prompt_hashes', {}).get(task))}` | {_figure(run.get('contexts', {}).get(task))} "
            f"| {_count(task_counts.get('requested'))} | {_count(task_counts.get('written'))} "
            f"| {_reasons(task_counts.get('rejected'))} | {_reasons(task_counts.get('skipped'))} "
            f"| {_rate(task_quality.get('chair_i'))} | {_rate(task_quality.get('chair_s'))} |"
        )
    lines.append("")
    if not quality:
        lines += ["Grounding (CHAIR) was not measured by this run.", ""]
    return lines


def _curation_lines(curation: dict) -> list[str]:
    """Images left out and chosen before generating, records moved to rejects after (datagen/curate/)."""
    lines = []
    excluded, selection = curation.get("excluded") or {}, curation.get("selection") or {}
    if excluded:
        lines.append(
            f"- Excluded: {_count(excluded.get('excluded'))} source images named by {_count(excluded.get('listed'))} ids in "
            f"{', '.join(f'`{name}`' for name in excluded.get('sources') or [])} (id list sha256 `{_figure(excluded.get('list_sha256'))}`)"
        )
    if selection:
        lines.append(
            f"- Selected: {_count(selection.get('chosen'))} of {_count(selection.get('candidates'))} images by {_figure(selection.get('method'))} "
            f"(budget {_count(selection.get('budget'))}, seed {_figure(selection.get('seed'))}, at most {_count(selection.get('per_category_cap'))} per category)"
        )
    for step in curation.get("steps") or []:
        moved = step.get("moved") or {}
        lines.append(
            f"- {str(step.get('step')).capitalize()}: {_count(sum(moved.values()))} of {_count(step.get('examined'))} records moved to rejects.jsonl"
            f" ({', '.join(f'{task} {count}' for task, count in moved.items()) or 'none'}), {_figure(step.get('finished_at'))}"
        )
    return lines


def _reasons(counts: object) -> str:
    if not isinstance(counts, dict) or not counts:
        return "0"
    total = sum(value for value in counts.values() if isinstance(value, int))
    return f"{total} (" + ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items())) + ")"


def _export_section(entry: dict, header: dict, with_provenance: bool) -> list[str]:
    config = next(
        (config["config_name"] for config in header["configs"] if config["data_files"][0]["path"] == entry["file"]), "default"
    )
    records = entry.get("records") or {}
    lines = [
        f"## Export `{entry['file']}`",
        "",
        f"- {sum(records.values())} records ({', '.join(f'{task} {count}' for task, count in records.items())}) "
        f"from `{entry.get('source')}`, as a {'JSONL file' if entry.get('format') == 'jsonl' else 'JSON array'}, "
        f"{'with' if entry.get('meta') else 'without'} the provenance field `meta`, "
        + (f"shuffled with seed {entry['shuffle_seed']}" if entry.get("shuffle_seed") is not None else "in task then id order"),
        f'- Load: `load_dataset(FOLDER, "{config}", split="train")`',
        "",
    ]
    if with_provenance:
        lines += _provenance(entry["run"], heading="### How it was made") if entry.get("run") else ["No manifest.json was found next to the source records.", ""]
    return lines
