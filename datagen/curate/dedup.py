"""`datagen dedup RUN`: records that repeat an earlier record of the run, moved to rejects as `near_duplicate`.

A record repeats another when both its answers and its questions are alike: the answers' word n-gram sets and
the questions' word sets of Jaccard similarity at least --answer-threshold and --question-threshold, estimated with MinHash and found with LSH
(datasketch's MinHashLSH), so 158K records take one pass, not 12 billion comparisons. Questions alone do not make a
duplicate: every detail record asks one of a few instructions, and "What color is the bus?" is a fine question
about two different buses. Answers are looked up in the LSH index; questions are compared only for the
candidates it returns. The first record is kept, in task then line order, and later ones name it.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from datagen.curate.moves import Move, Row, apply_moves, task_rows, turns
from datagen.errors import InputError
from datagen.files.lock import lock_folder
from datagen.formats.manifest import CurationStep, load_run_manifest
from datagen.curate.settings import DedupSettings
from datagen.formats.records import IMAGE_TOKEN

if TYPE_CHECKING:
    import numpy as np

_WORD = re.compile(r"\w+")


_MAX_HASH = (1 << 32) - 1
_FOLD = 1_000_003  # combines word hashes into an n-gram's


class Sketch:
    """A MinHash signature, with what datasketch's MinHashLSH reads of one (`hashvalues`, the length)."""

    __slots__ = ("hashvalues",)

    def __init__(self, hashvalues: np.ndarray) -> None:
        self.hashvalues = hashvalues

    def __len__(self) -> int:
        return len(self.hashvalues)


class Sketcher:
    """MinHash sketches of word n-gram sets, vectorised: each distinct word is hashed once (crc32, the same in every
    process, so a rerun moves the same records), an n-gram's hash folds its words', and one array operation applies
    every permutation to every n-gram. datasketch's own MinHash hashes each shingle string in Python: 2x slower here."""

    def __init__(self, settings: DedupSettings) -> None:
        import numpy as np

        # Multiply-shift hashing ((a * h + b) mod 2^64, top 32 bits; a odd): a universal family like datasketch's
        # (a * h + b) mod p, without the modulo that took most of the time.
        generator = np.random.default_rng(settings.seed)
        self.a = generator.integers(0, 1 << 63, size=settings.num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self.b = generator.integers(0, 1 << 63, size=settings.num_perm, dtype=np.uint64)
        self.word_hash: dict[str, int] = {}

    def _words(self, text: str) -> list[int]:
        words = _WORD.findall(text.replace(IMAGE_TOKEN, " ").lower())
        table = self.word_hash
        if not all(map(table.__contains__, words)):
            for word in set(words).difference(table):
                table[word] = zlib.crc32(word.encode())
        # Looked up in C: a Python loop over 20M words was a third of the time.
        return list(map(table.__getitem__, words))

    def sketch(self, texts: list[str], ngram: int) -> Sketch:
        """The n-grams of the texts' words (lower-cased, the image token left out); fewer words than n make one n-gram."""
        import numpy as np

        words = np.array(self._words("\n".join(texts)) or [0], dtype=np.uint64)
        width = min(ngram, len(words))
        grams = words[: len(words) - width + 1].copy()
        for offset in range(1, width):
            grams = (grams * np.uint64(_FOLD) + words[offset: len(words) - width + 1 + offset]) & np.uint64(_MAX_HASH)
        permuted = (grams[:, None] * self.a + self.b) >> np.uint64(32)
        return Sketch(permuted.min(axis=0).astype(np.uint32))  # 32-bit values: half the memory of a kept sketch


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """The share of equal MinHash values: an estimate of the two shingle sets' Jaccard similarity."""
    import numpy as np

    return float(np.count_nonzero(a == b)) / len(a)


class _Kept(NamedTuple):
    order: int
    key: str
    answer: np.ndarray  # sketches: LSH candidates are only likely alike, so each is checked against both thresholds
    question: np.ndarray


def find_duplicates(rows: Iterable[Row], settings: DedupSettings) -> tuple[list[Move], int]:
    """The later records of each group of near-duplicates, each naming the first of its group; and the records read.
    Of a kept record only its key and sketches stay in memory (158K parsed records would take gigabytes)."""
    try:
        from datasketch import MinHashLSH
    except ImportError:
        raise InputError("datagen dedup needs datasketch: pip install 'datagen[curate]'") from None

    sketcher = Sketcher(settings)
    # Weighted for recall: LSH's candidates are checked against both thresholds anyway, so a false candidate costs one
    # comparison while a missed one is a duplicate kept (at 64 permutations: 89% found at the threshold, 99% at +0.1).
    # Exact copies only (1.0) is looked up a little below: the banding needs room either side of its threshold.
    index = MinHashLSH(threshold=min(settings.answer_threshold, 0.95), num_perm=settings.num_perm, weights=(0.1, 0.9))
    kept: dict[str, _Kept] = {}
    moves = []
    count = 0
    for order, row in enumerate(rows):
        count += 1
        answer = sketcher.sketch(turns(row, "gpt"), settings.ngram)
        # Questions are short: one word changed would halve their n-gram overlap, so they are compared as word sets.
        question = sketcher.sketch(turns(row, "human"), 1).hashvalues
        alike = (
            kept[key] for key in sorted(index.query(answer), key=lambda key: kept[key].order)
            if similarity(answer.hashvalues, kept[key].answer) >= settings.answer_threshold
            and similarity(question, kept[key].question) >= settings.question_threshold
        )
        match = next(alike, None)  # the earliest record alike in both
        if match is None:
            index.insert(row.key, answer)
            kept[row.key] = _Kept(order, row.key, answer.hashvalues, question)
        else:
            detail = f"repeats {match.key} (answers and questions alike at Jaccard >= {settings.answer_threshold}/{settings.question_threshold})"
            moves.append(Move(row, "near_duplicate", detail, duplicate_of=match.key))
    return moves, count


def dedup(folder: Path, settings: DedupSettings, command: list[str], dry_run: bool = False) -> tuple[CurationStep | None, list[Move]]:
    """Find the near-duplicates of a run and (unless `dry_run`) move them; the step recorded, and the moves."""
    if not folder.is_dir():
        load_run_manifest(folder, "dedup")  # names the missing folder; the lock would create it
    with lock_folder(folder, "dedup"):
        manifest = load_run_manifest(folder, "dedup")
        moves, examined = find_duplicates(task_rows(folder), settings)
        if dry_run:
            return None, moves
        step = apply_moves(folder, manifest, moves, "dedup", command, settings.model_dump(), examined=examined)
    return step, moves
