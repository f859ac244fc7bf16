"""JSON Schemas of what we write, generated from the pydantic models: `python -m datagen.formats.schemas schemas/`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from datagen.formats.records import GeneratedRecord, InstructRecord, Reject
from datagen.formats.manifest import Manifest

MODELS: dict[str, type[BaseModel]] = {
    "instruct_record": InstructRecord,
    "generated_record": GeneratedRecord,
    "reject": Reject,
    "manifest": Manifest,
}


def schema_documents() -> dict[str, str]:
    return {
        f"{name}.schema.json": json.dumps(model.model_json_schema(by_alias=True), indent=2, sort_keys=True) + "\n"
        for name, model in MODELS.items()
    }


def write_schemas(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in schema_documents().items():
        (folder / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    write_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "schemas"))
