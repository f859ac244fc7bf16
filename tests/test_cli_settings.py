"""The settings tree (datagen/run/options.py) as the command line and the manifest see it: flags built from its
fields, the fingerprint of an existing folder unchanged, and help that guides."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
import typer
from pydantic import BaseModel, BeforeValidator, Field
from typer.testing import CliRunner

from datagen.run.options import INPUT, LIMITS, OUTPUT, Flag
from tests.conftest import CAPTIONS, INSTANCES, REPO

# `make demo`'s generate, as every folder made before the settings tree has it: a resume must find it unchanged.
DEMO_FINGERPRINT = "697b7a4bb52f40ca"
DEMO_PARTS = {
    "captions_sha256": "6ba809c4236490b7cf5d283f71beb6f673942b1d4917d6020c2631d621e83929",
    "instances_sha256": "ed34ea8da8323ca620dcc849744c04c1fa49a458efe7a4644b43a633614d36c4",
    "teacher": "mock",
    "model": "mock",
    "temperature": 0.7,
    "max_tokens": 1024,
    "length_retry_max_tokens": None,
    "reject_unsupported": False,
    "seed": 0,
    "detail_instructions": "4c98b3a74b32f4a8",
    "shard": None,
    "request_shape": {"token_limit_field": "max_tokens", "omit": [], "extra_body": {}},
    "prompt_pack:conversation": "066c3e7e12aaed8f",
    "context:conversation": "captions",
    "prompt_pack:detail": "35b692b8747c7f52",
    "context:detail": "captions+boxes",
    "prompt_pack:complex_reasoning": "d7290a6da2a44ec2",
    "context:complex_reasoning": "captions+boxes",
}


def test_the_demo_folders_fingerprint_is_unchanged(generate_mock, tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    generate_mock(out, "--seed", "0")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["fingerprint"] == DEMO_FINGERPRINT
    assert list(manifest["settings"]["fingerprint_parts"].items()) == list(DEMO_PARTS.items())  # the file's key order too


def test_a_folder_made_before_the_tree_resumes(generate_mock, tmp_path: Path) -> None:
    out = tmp_path / "old"
    generate_mock(out, "--limit", "2")
    # What the code before the settings tree wrote for this folder: the parts listed as they were.
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    manifest["settings"]["fingerprint_parts"] = dict(DEMO_PARTS)
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    generate_mock(out, "--limit", "3")
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8"))["requests_sent"] == 3  # one more image, nothing redone


def test_settings_parts_of_the_fingerprint() -> None:
    from datagen.run.options import GenerateSettings

    text = GenerateSettings(captions=CAPTIONS, out=Path("o"), shard="1/3", max_completion_tokens=9, image_max_side=512).fingerprint_parts({})
    assert text == {"temperature": 0.7, "length_retry_max_tokens": None, "reject_unsupported": False, "seed": 0, "shard": [1, 3],
                    "request_shape": {"token_limit_field": "max_completion_tokens", "omit": [], "extra_body": {}}}
    vision = GenerateSettings(captions=CAPTIONS, out=Path("o"), see="both", images=Path("."), image_max_side=512).fingerprint_parts({})
    assert (vision["see"], vision["image_max_side"]) == ("both", 512)


class Toy(BaseModel):
    """A settings model of the kind a new command or a new option adds."""

    source: Annotated[Path, Flag("Where from", INPUT, argument=True)]
    names: Annotated[list[str], BeforeValidator(lambda value: value.split(",") if isinstance(value, str) else value),
                     Flag("Comma-separated names", INPUT, cli_type=str)] = Field(default_factory=lambda: ["a", "b"])
    rate: Annotated[float, Field(ge=0.5, le=4.0), Flag("How fast", LIMITS)] = 1.0
    keep: Annotated[bool, Flag("Do not keep", OUTPUT, decls=("--drop",), invert=True)] = True
    hidden: int = 3  # no Flag: not on the command line


def test_a_field_with_a_flag_is_a_flag() -> None:
    from datagen.cli_flags import SwitchesTakeNoValue, takes_settings

    seen: list[Toy] = []
    app = typer.Typer(cls=SwitchesTakeNoValue)

    @app.command()
    @takes_settings(Toy)
    def run(settings: Toy, verbose: bool = typer.Option(False, "--verbose")) -> None:
        seen.append(settings)

    @app.command()
    def other() -> None:
        pass

    runner = CliRunner()
    assert runner.invoke(app, ["run", "here", "--names", "x,y", "--rate", "2", "--drop"]).exit_code == 0
    assert seen[-1] == Toy(source=Path("here"), names=["x", "y"], rate=2.0, keep=False)
    assert runner.invoke(app, ["run", "here"]).exit_code == 0 and seen[-1] == Toy(source=Path("here"))
    assert runner.invoke(app, ["run", "here", "--rate", "9"]).exit_code == 2  # the field's range is the flag's
    assert runner.invoke(app, ["run", "here", "--hidden", "1"]).exit_code == 2
    shown = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "140"}).output
    for panel in ("Input", "Throughput and limits", "Output"):
        assert f"─ {panel} " in shown
    assert "[default: a,b]" in shown and "[default: 1.0]" in shown and "<bool>" not in shown


def help_of(*command: str) -> str:
    from datagen.cli import app

    return CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "300"}).output


def test_generate_help_groups_its_flags_and_shows_switches_as_switches() -> None:
    from datagen.cli_flags import settings_flags
    from datagen.run.options import PANELS, GenerateSettings

    shown = help_of("generate")
    for panel in PANELS:
        assert f"─ {panel} " in shown, panel
    for param in settings_flags(GenerateSettings):
        name = param.default.param_decls[0] if param.default.param_decls else "--" + param.name.replace("_", "-")
        assert name in shown, name
    assert "<bool>" not in shown and "--no-cache  " in shown
    assert "needs datagen[ray])" in shown  # not eaten as rich markup
    assert "[default: conversation,detail,complex_reasoning]" in shown and "[default: 0.7]" in shown


@pytest.mark.parametrize("command", [(), ("export",), ("audit",), ("judge",), ("align",), ("merge",), ("ray",), ("eval", "pope"),
                                     ("train", "pretrain"), ("train", "finetune"), ("mock-server",)])
def test_no_switch_shows_a_value(command: tuple[str, ...]) -> None:
    assert "<bool>" not in help_of(*command)


def test_help_names_what_each_command_does_and_its_defaults() -> None:
    assert "POPE" in help_of("eval") and "POPE" in help_of()
    finetune = help_of("train", "finetune")
    assert "[default: (0.001 pretrain, 2e-05 finetune)]" in finetune and "[default: (full)]" in finetune and "[default: (2048)]" in finetune


def test_version() -> None:
    from datagen import __version__
    from datagen.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"datagen {__version__}"


def test_help_loads_neither_numpy_nor_torch() -> None:
    """`datagen --help` lists the commands without building their flags: no settings model, so not even pydantic."""
    probe = (
        "import sys\nsys.argv = ['datagen', '--help']\nfrom datagen.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert exit.code in (0, None), exit.code\n"
        "print('HEAVY', sorted(name for name in ('numpy', 'torch', 'pycocotools', 'PIL', 'pydantic', 'datagen.run.options') if name in sys.modules))"
    )
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert "Commands" in shown and "generate " in shown and "Ask the teacher for each image" in shown
    assert shown.rsplit("HEAVY", 1)[1].strip() == "[]"


def test_a_listed_command_runs_and_shows_the_flags_it_is_built_with() -> None:
    """The root group's commands are built when used: their flags (and the defaults read from the settings models)
    are those of the command itself, for running, for --help and for a caller reading `params`."""
    import typer.main

    from datagen.cli import app

    listed = typer.main.get_command(app).commands["dedup"]  # type: ignore[attr-defined]
    assert "--answer-threshold" in {name for param in listed.params for name in param.opts}
    shown = help_of("dedup")
    assert "[default: 0.7]" in shown and "[default: 64]" in shown
    assert CliRunner().invoke(app, ["dedup", "--ngram", "0", "x"]).exit_code == 2  # the flag's range holds


def test_cli_flags_and_api_settings_agree(tmp_path: Path, generate_mock) -> None:
    """One run from the command line and one from Python, same settings: the same records."""
    from datagen import GenerateSettings, generate

    generate_mock(tmp_path / "cli", "--limit", "2", "--tasks", "detail")
    api = generate(GenerateSettings(captions=CAPTIONS, instances=INSTANCES, out=tmp_path / "api", teacher="mock", limit=2, tasks="detail", progress=False))
    assert (tmp_path / "cli" / "detail.jsonl").read_bytes() == api.files["detail"].read_bytes()
    manifests = [json.loads((tmp_path / name / "manifest.json").read_text(encoding="utf-8")) for name in ("cli", "api")]
    assert manifests[0]["fingerprint"] == manifests[1]["fingerprint"]
