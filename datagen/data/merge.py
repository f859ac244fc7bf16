"""`datagen merge`: join the output folders of `generate --shard i/n` runs into the folder one unsharded run writes.

Shards must come from one run's settings (every fingerprint part but `shard` equal) and must not share an
item; the merged files are built in a staging folder inside the target, which the merge holds locked
(datagen/files/lock.py), and renamed into place with the manifest last.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import os
import shutil
import sqlite3
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from datagen.teachers.cache import ResponseCache
from datagen.errors import InputError
from datagen.files.lock import LOCK_FILE, lock_folder
from datagen.formats.manifest import MANIFEST_FILE, Curation, Manifest, fingerprint, load_run_manifest, write_manifest
from datagen.formats.metrics import METRICS, combine
from datagen.formats.record_lines import checked_records
from datagen.run.output_folder import CACHE_FILE, REJECTS_FILE
from datagen.formats.records import task_file

STAGING_PREFIX = ".merging-"  # inside --out, so the merged files reach it by rename, on one file system


def check_one_run(folders: list[Path], manifests: list[Manifest]) -> None:
    """Refuse shards whose requests were shaped differently: their union would be no single run's output."""
    first = manifests[0].settings.fingerprint_parts
    for folder, manifest in zip(folders[1:], manifests[1:]):
        parts = manifest.settings.fingerprint_parts
        for key in sorted((set(first) | set(parts)) - {"shard"}):
            if first.get(key) != parts.get(key):
                raise InputError(
                    f"{folders[0]} and {folder} differ in {key} ({first.get(key)!r} vs {parts.get(key)!r});"
                    " merge only shards generated with the same inputs and settings"
                )


def _lines(path: Path) -> list[tuple[dict, bytes]]:
    """Each line parsed and as written, so merged records are byte for byte what the shards wrote."""
    return [(line.data, line.raw if line.raw.endswith(b"\n") else line.raw + b"\n") for line in checked_records(path, path.name == REJECTS_FILE)]


def _claim(owners: dict[tuple[int, str], Path], image_id: int, task: str, folder: Path) -> None:
    other = owners.setdefault((image_id, task), folder)
    if other != folder:
        raise InputError(f"{other} and {folder} both hold image {image_id} task {task}; merge shards that split the images (--shard i/n of one n)")


# How merge combines each manifest field of the shards. Every field is in one of these sets (a test checks), so a
# new field cannot silently keep shard 0's value: a summed one only needs to support `+`. The run's metrics are no
# fields: each says how it merges where it is declared (formats/metrics.py).
SUMMED = frozenset({"counts", "quality", "usage"})
SHARED = frozenset({"datagen_version", "teacher", "base_url", "prompt_hashes"})  # one run's settings: equal in every shard
DERIVED = frozenset({"status", "command", "started_at", "finished_at", "settings", "fingerprint", "source", "last_error", "failure", "curation"})


def _sum(values: list):
    """Numbers and models with `+` add up; dicts of them add up key by key (a key missing from a shard adds nothing);
    a field no shard set stays None."""
    return combine(values, lambda present: functools.reduce(operator.add, present))


def _cache_files(folders: list[Path], manifests: list[Manifest]) -> list[Path]:
    found: dict[Path, None] = {}
    for folder, manifest in zip(folders, manifests):
        # The folder's own cache first (a copied folder's manifest still names the original), else a --cache file.
        path = folder / CACHE_FILE if (folder / CACHE_FILE).exists() else Path(manifest.settings.cache or folder / CACHE_FILE)
        if path.exists():
            found[path.resolve()] = None  # shards sharing one cache file contribute it once
    return list(found)


def merge_caches(sources: list[Path], target: Path) -> None:
    ResponseCache(target).close()  # the same schema a run creates
    db = sqlite3.connect(target, isolation_level=None)
    try:
        for source in sources:
            try:
                db.execute("ATTACH DATABASE ? AS shard", (str(source),))
                # Equal keys mean equal requests; whichever answer came first is as good as the other.
                db.execute("INSERT OR IGNORE INTO replies (key, reply) SELECT key, reply FROM shard.replies")
                db.execute("DETACH DATABASE shard")
            except sqlite3.DatabaseError as error:
                raise InputError(f"{source}: cannot read as a response cache ({error}); merge with --no-cache to leave the caches out") from None
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def merge(folders: list[Path], out: Path, merge_cache: bool = True, command: list[str] | None = None) -> Manifest:
    if len(set(map(Path.resolve, folders))) != len(folders):
        raise InputError("merge: a folder is named twice; pass each shard's --out folder once")
    with contextlib.ExitStack() as locks:
        locks.enter_context(lock_folder(out, "merge"))
        if any(path.name != LOCK_FILE and not path.name.startswith(STAGING_PREFIX) for path in out.iterdir()):
            raise InputError(f"--out {out}: exists and is not empty; pick a new folder for the merged output")
        for stale in out.glob(f"{STAGING_PREFIX}*"):  # left by a killed merge: we hold the folder, nobody else uses it
            shutil.rmtree(stale)
        for folder in folders:
            locks.enter_context(lock_folder(folder, "merge", shared=True))
        return _merge_into(folders, out, merge_cache, command or [])


def _merge_into(folders: list[Path], out: Path, merge_cache: bool, command: list[str]) -> Manifest:
    manifests = [load_run_manifest(folder, "merge") for folder in folders]
    check_one_run(folders, manifests)
    tasks = manifests[0].settings.tasks

    owners: dict[tuple[int, str], Path] = {}
    outputs: dict[str, list[tuple[tuple, bytes]]] = {}
    for task in tasks:
        outputs[task_file(task)] = []
        for folder in folders:
            for record, raw in _lines(folder / task_file(task)):
                _claim(owners, record["meta"]["image_id"], task, folder)
                outputs[task_file(task)].append(((record["id"],), raw))
    outputs[REJECTS_FILE] = []
    for folder in folders:
        for reject, raw in _lines(folder / REJECTS_FILE):
            _claim(owners, reject["meta"]["image_id"], reject["task"], folder)
            outputs[REJECTS_FILE].append(((reject["id"], reject["task"]), raw))

    staging = out / f"{STAGING_PREFIX}{os.getpid()}"
    staging.mkdir()
    try:
        for name, lines in outputs.items():
            (staging / name).write_bytes(b"".join(raw for _, raw in sorted(lines, key=lambda line: line[0])))
        if merge_cache:
            merge_caches(_cache_files(folders, manifests), staging / CACHE_FILE)
        manifest = merged_manifest(folders, manifests, out / CACHE_FILE if merge_cache else None, command)
        write_manifest(staging, manifest)
        # The manifest last: a kill midway leaves records without one, which generate and merge both refuse.
        for path in sorted(staging.iterdir(), key=lambda path: path.name == MANIFEST_FILE):
            os.replace(path, out / path.name)
        staging.rmdir()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def merged_manifest(folders: list[Path], manifests: list[Manifest], cache: Path | None, command: list[str]) -> Manifest:
    """The shards' manifest with counts, usage and metrics combined, and `shard` cleared so an unsharded rerun resumes it."""
    first = manifests[0]
    parts = {**first.settings.fingerprint_parts, "shard": None}
    statuses = [manifest.status for manifest in manifests]
    hard_cases: Counter[str] = Counter()
    for manifest in manifests:
        hard_cases.update(manifest.source.hard_cases)  # each shard counts its own images'
    settings = first.settings.model_copy(
        update={
            "cache": str(cache) if cache else None,
            "fingerprint_parts": parts,
            "shards": [
                {"folder": str(folder), "shard": manifest.settings.fingerprint_parts.get("shard"), "status": manifest.status}
                for folder, manifest in zip(folders, manifests)
            ],
        }
    )
    return first.model_copy(
        update={
            # Completed only when every shard was: a merge of unfinished shards is unfinished too.
            "status": next((status for status in statuses if status != "completed"), "completed"),
            "command": command,
            "started_at": min(manifest.started_at for manifest in manifests),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "settings": settings,
            "fingerprint": fingerprint(parts),
            **{name: _sum([getattr(manifest, name) for manifest in manifests]) for name in SUMMED},
            **{metric.name: metric.merged([manifest.metrics.get(metric.name) for manifest in manifests]) for metric in METRICS.values()},
            "source": first.source.model_copy(update={"hard_cases": dict(sorted(hard_cases.items()))}),
            "last_error": next((manifest.last_error for manifest in reversed(manifests) if manifest.last_error), None),
            "failure": next((manifest.failure for manifest in manifests if manifest.failure), None),
            "curation": Curation.merged([manifest.curation for manifest in manifests]),
        }
    )
