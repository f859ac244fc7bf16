"""The README's newcomer part, run as written: the quick start (against the local mock OpenAI-compatible server),
`make demo`'s commands and the offline examples after it, the example record, the picture, and the command table."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from datagen.cli import app
from datagen.testing.mock_openai_server import MockServer

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
TASK_FILES = ("conversation.jsonl", "detail.jsonl", "complex_reasoning.jsonl")


def section(heading: str) -> str:
    """The text of the README's `## heading` section, up to the next `## `."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, f"README has no '## {heading}' section"
    return match.group(1)


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S)


def command_lines(block: str) -> list[list[str]]:
    """The block's lines as argument lists, comments dropped."""
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def run_datagen(args: list[str]):
    assert args[0] == "datagen", f"not a datagen command: {args}"
    return CliRunner().invoke(app, args[1:])


@pytest.fixture
def in_checkout_copy(tmp_path: Path, monkeypatch) -> Path:
    """A folder that looks like the checkout's root to relative paths (`data/`), where outputs land in tmp_path."""
    (tmp_path / "data").symlink_to(ROOT / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return tmp_path


def command_paths(group: TyperGroup, prefix: tuple[str, ...] = ()) -> set[str]:
    """Every runnable `datagen ...` command of the CLI, groups opened up."""
    paths = set()
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup):
            paths |= command_paths(command, (*prefix, name))
        else:
            paths.add(" ".join((*prefix, name)))
    return paths


def table_commands() -> list[str]:
    return re.findall(r"^\| `datagen ([a-z -]+)` \|", section("Commands"), re.M)


def test_command_table_names_every_command_once() -> None:
    listed = table_commands()
    assert len(listed) == len(set(listed)), listed
    cli_commands = command_paths(typer.main.get_command(app))  # type: ignore[arg-type]
    # `judge summarize` is a mode of `judge` (its first argument), listed on its own because it makes no calls.
    assert set(listed) == cli_commands | {"judge summarize"}


@pytest.mark.parametrize("command", table_commands())
def test_each_listed_command_has_help(command: str) -> None:
    result = CliRunner().invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    assert command.split()[-1] in result.output


def test_readme_opens_with_the_two_commands() -> None:
    first = code_blocks(README)[0]
    assert [line.split()[:2] for line in first.splitlines()] == [["make", "demo"], ["make", "test"]]


def test_the_report_picture_is_a_small_png_in_docs() -> None:
    pictures = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", section("The report"))
    assert pictures == ["docs/report.png"]
    picture = ROOT / pictures[0]
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert picture.stat().st_size < 400_000


def test_quick_start_against_an_openai_compatible_server(in_checkout_copy: Path, monkeypatch) -> None:
    """The three lines, with the key exported as written and OPENAI_BASE_URL at the mock server."""
    block = code_blocks(section("Quick start against a real API"))[0]
    lines = command_lines(block)
    assert [line[0] for line in lines] == ["export", "datagen", "datagen"]
    exported = lines[0][1].split("=", 1)[0]
    assert exported == "OPENAI_API_KEY"
    with MockServer() as server:
        monkeypatch.setenv(exported, "sk-docs-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        generate = run_datagen(lines[1])
        assert generate.exit_code == 0, generate.output
        sent = server.stats()
    out = in_checkout_copy / lines[1][lines[1].index("--out") + 1]
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    # The prose under the block: five images, three tasks each, 15 requests, and the named model, not a mock.
    assert "`--limit 5` asks for the first five images, three tasks each (15 requests)" in section("Quick start against a real API")
    assert manifest["requests_sent"] == 15
    assert manifest["teacher"]["model"] == "gpt-4o-mini" and not manifest["teacher"].get("mock")
    assert sent, "the mock server saw no request"
    for name in TASK_FILES:
        assert len((out / name).read_text(encoding="utf-8").splitlines()) == 5

    show = run_datagen(lines[2])
    assert show.exit_code == 0, show.output
    first_id = json.loads((out / "conversation.jsonl").read_text(encoding="utf-8").splitlines()[0])["id"]
    assert first_id in show.output

    export = re.search(r"`(datagen export run1 --out\s+llava_instruct\.json)`", section("Quick start against a real API"))
    assert export, "the quick start's export command moved"
    exported_run = run_datagen(shlex.split(export.group(1)))
    assert exported_run.exit_code == 0, exported_run.output
    assert len(json.loads((in_checkout_copy / "llava_instruct.json").read_text(encoding="utf-8"))) == 15


def make_demo_commands() -> list[list[str]]:
    """`make demo`'s datagen lines from the Makefile, `$(BIN)/datagen` read as `datagen`."""
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
    assert recipe
    lines = [line.strip().replace("$(BIN)/datagen", "datagen") for line in recipe.group(1).splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("datagen ")]


@pytest.mark.slow
def test_make_demo_then_the_offline_examples_and_the_example_record(in_checkout_copy: Path) -> None:
    demo = make_demo_commands()
    assert [args[1] for args in demo] == ["generate", "export", "align"]
    for args in demo:
        result = run_datagen(args)
        assert result.exit_code == 0, (args, result.output)

    offline = command_lines(code_blocks(section("Quick start against a real API"))[1])
    assert [args[1] for args in offline] == ["show", "report", "audit"]
    outputs = {}
    for args in offline:
        result = run_datagen(args)
        assert result.exit_code == 0, (args, result.output)
        outputs[args[1]] = result.output
    detail_id = json.loads((in_checkout_copy / "demo-out/detail.jsonl").read_text(encoding="utf-8").splitlines()[0])["id"]
    assert detail_id in outputs["show"]
    assert (in_checkout_copy / "demo-out/report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert json.loads((in_checkout_copy / "demo-out/audit/summary.json").read_text(encoding="utf-8"))

    # The README's record is the demo's first conversation record, field for field; a value ending in "..." is
    # shortened in the README and must begin the real one.
    shown = json.loads(code_blocks(section("One record"))[0])
    real = json.loads((in_checkout_copy / "demo-out/conversation.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert_same_record(shown, real)
    # "`datagen export` keeps `id`, `image` and `conversations`": the export's first record is that record without meta.
    assert "`datagen export` keeps `id`, `image` and `conversations`" in " ".join(section("One record").split())
    exported = json.loads((in_checkout_copy / "demo-out/llava_instruct.json").read_text(encoding="utf-8"))
    assert exported[0] == {key: real[key] for key in ("id", "image", "conversations")}


def assert_same_record(shown: object, real: object, where: str = "record") -> None:
    if isinstance(shown, str) and shown.endswith("...") and isinstance(real, str):
        assert real.startswith(shown[:-3]), where
    elif isinstance(shown, dict) and isinstance(real, dict):
        assert shown.keys() == real.keys(), where
        for key in shown:
            assert_same_record(shown[key], real[key], f"{where}.{key}")
    elif isinstance(shown, list) and isinstance(real, list):
        assert len(shown) == len(real), where
        for index, (a, b) in enumerate(zip(shown, real)):
            assert_same_record(a, b, f"{where}[{index}]")
    else:
        assert shown == real, where


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lowercased, punctuation but `-` dropped, spaces to `-`."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_to_docs_reach_a_file_and_heading() -> None:
    links = re.findall(r"\]\(((?:docs|bench)/[^)#]+)(?:#([^)]+))?\)", README)
    assert links, "the README links to no page in docs/"
    for target, anchor in links:
        path = ROOT / target
        assert path.is_file(), target
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)
            assert anchor in {github_anchor(heading) for heading in headings}, f"{target}#{anchor}"


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_commands(text: str) -> list[list[str]]:
    """Every `datagen ...` command line of a page's code blocks (continuations joined, comments and env prefixes dropped)."""
    commands = []
    for block in code_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.replace("[", " ").replace("]", " "), comments=True)
            while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
                words = words[1:]
            if words[:1] == ["datagen"]:
                commands.append(words)
    return commands


def walk(words: list[str]):
    """The deepest command `datagen WORDS...` names, and the words after it."""
    command, rest = typer.main.get_command(app), words[1:]
    while isinstance(command, TyperGroup) and rest and rest[0] in command.commands:
        command, rest = command.commands[rest[0]], rest[1:]
    return command, rest


def resolve(words: list[str]):
    """The click command a documented line runs, and the option names it accepts."""
    command, _ = walk(words)
    assert not isinstance(command, TyperGroup), f"no such command: {' '.join(words)}"
    return command, {name for param in command.params for name in (*param.opts, *param.secondary_opts)}


def inline_commands(text: str) -> list[list[str]]:
    """`datagen ...` spans in the prose, except those naming a group as a whole (`datagen train`, `datagen COMMAND`,
    `datagen train ...`); a group followed by a lowercase word that is none of its commands is kept, to fail."""
    commands = []
    for span in re.findall(r"(?<!`)`(datagen [^`]+)`", text):
        words = shlex.split(span.replace("[", " ").replace("]", " "))
        command, rest = walk(words)
        names_a_group = isinstance(command, TyperGroup) and not (rest and re.fullmatch(r"[a-z][a-z-]*", rest[0]))
        if not names_a_group:
            commands.append(words)
    return commands


def test_command_lines_are_found_in_the_pages() -> None:
    assert len(documented_commands(README)) > 20
    assert any(words[:3] == ["datagen", "judge", "summarize"] for words in documented_commands((ROOT / "docs/COMPARING_TEACHERS.md").read_text()))


@pytest.mark.parametrize("page", DOCS, ids=lambda page: page.name)
def test_documented_commands_exist_with_their_flags(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for words in documented_commands(text) + inline_commands(text):
        command, options = resolve(words)
        flags = {word.split("=", 1)[0] for word in words if word.startswith("--")}
        unknown = flags - options - {"--help"}
        assert not unknown, f"{page.name}: `{' '.join(words)}` uses {sorted(unknown)}, which `datagen {command.name}` lacks"


def project_paths(text: str) -> set[str]:
    """Backticked paths into the repository (`bench/x.py`) or the package, written from inside it (`run/job.py`)."""
    roots = {path.name for path in ROOT.iterdir() if path.is_dir()} | {path.name for path in (ROOT / "datagen").iterdir() if path.is_dir()}
    paths = set(re.findall(r"`([\w.-]+(?:/[\w.-]+)+/?)`", text))
    return {path for path in paths if path.split("/")[0] in roots - {".venv", ".git", ".real", "__pycache__"}}


@pytest.mark.parametrize("page", DOCS, ids=lambda page: page.name)
def test_files_the_pages_name_exist(page: Path) -> None:
    named = project_paths(page.read_text(encoding="utf-8"))
    missing = sorted(path for path in named if not ((ROOT / path).exists() or (ROOT / "datagen" / path).exists()))
    assert not missing, f"{page.name} names files that do not exist: {missing}"
