"""Every teacher, wrapped or not, answers what provenance and progress ask of it, with no reaching through wrappers."""

from __future__ import annotations

from pathlib import Path

import pytest

from datagen.run.batch import CacheOnlyTeacher
from datagen.teachers.cache import CachingTeacher, ResponseCache
from datagen.teachers.teacher import MockTeacher, OpenAITeacher, Teacher

DECLARED = ("info", "stats", "base_url", "last_error", "limiter")


def teachers(tmp_path: Path) -> list[Teacher]:
    live = OpenAITeacher(model="m", api_key="sk-test", base_url="http://127.0.0.1:9/v1/")
    return [
        MockTeacher(),
        live,
        CacheOnlyTeacher(MockTeacher().info, base_url="http://batch.example/v1"),
        CachingTeacher(live, ResponseCache(tmp_path / "cache.sqlite")),
    ]


@pytest.mark.parametrize("index", range(4))
def test_every_teacher_has_the_declared_attributes(index: int, tmp_path: Path) -> None:
    teacher = teachers(tmp_path)[index]
    for name in DECLARED:
        assert hasattr(teacher, name), f"{type(teacher).__name__} lacks {name}"


def test_the_cache_wrapper_shows_the_inner_teachers_provenance(tmp_path: Path) -> None:
    live = OpenAITeacher(model="m", api_key="sk-test", base_url="http://127.0.0.1:9/v1/")
    wrapped = CachingTeacher(live, ResponseCache(tmp_path / "cache.sqlite"))
    live.last_error = "HTTP 500"
    assert (wrapped.base_url, wrapped.last_error, wrapped.limiter) == ("http://127.0.0.1:9/v1", "HTTP 500", live.limiter)
    assert CachingTeacher(MockTeacher(), ResponseCache(tmp_path / "other.sqlite")).base_url is None


def test_an_unknown_backend_is_named_with_every_known_one(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from datagen.cli import app

    repo = Path(__file__).resolve().parent.parent
    args = ["generate", "--teacher", "nope", "--captions", str(repo / "data" / "captions.json"), "--out", str(tmp_path / "o"), "--tasks", "conversation"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "--teacher nope: unknown backend; use openai, azure, anthropic, mock, mock-terse" in result.output
