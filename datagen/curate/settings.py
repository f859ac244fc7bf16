"""The settings of `datagen dedup` and `datagen filter`, each default written once: the command line reads them here
(a light module, so that `generate` does not import the curation code to start)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from datagen.tasks.prompts import BUNDLED_PROMPTS

RULES = BUNDLED_PROMPTS / "judge" / "filter_system_message.txt"


class DedupSettings(BaseModel):
    answer_threshold: float = Field(0.7, ge=0.1, le=1.0)
    question_threshold: float = Field(0.7, ge=0.0, le=1.0)
    ngram: int = Field(2, ge=1, description="Words per shingle of the answers")
    num_perm: int = Field(64, ge=16, description="MinHash permutations: more is slower and more exact")
    seed: int = 1


class FilterSettings(BaseModel):
    judge: str = "openai"
    judge_model: str | None = None
    base_url: str | None = None
    min_score: float = 6.0
    rules: Path = RULES
    captions: Path | None = None  # default: the files the run's manifest names
    instances: Path | None = None
    concurrency: int = 8
    timeout: float = 60.0
    max_retries: int = 4
    rpm: float | None = None
    tpm: float | None = None
    max_tokens: int = 200
    seed: int = 0
    cache: Path | None = None
    use_cache: bool = True
    price_in: float | None = None
    price_out: float | None = None
