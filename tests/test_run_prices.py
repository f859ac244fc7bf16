"""Prices: the flags, else a known hosted model's list price; the cost said with its source in the dry run, the
progress and the summary, this run's and the folder's."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from datagen.run.prices import FLAGS, LIST_PRICES, PRICES_AS_OF, list_price, resolve_prices
from tests.conftest import CAPTIONS, INSTANCES


@pytest.mark.parametrize(("model", "known"), [
    ("gpt-4o", "gpt-4o"), ("gpt-4o-2024-08-06", "gpt-4o"), ("GPT-4o-mini", "gpt-4o-mini"), ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("openai/gpt-4.1-mini", "gpt-4.1-mini"), ("gpt-4.1", "gpt-4.1"), ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("claude-sonnet-4-20250514", "claude-sonnet-4"), ("claude-3-5-haiku-latest", "claude-3-5-haiku"), ("claude-haiku-4-5", "claude-haiku-4-5"),
])
def test_a_known_model_is_found_under_its_dated_names(model: str, known: str) -> None:
    assert list_price(model) == (known, LIST_PRICES[known])


@pytest.mark.parametrize("model", [None, "", "gpt-4o-audio-preview", "gpt-4o-realtime", "my-llama-3-8b", "mock", "gpt-4"])
def test_another_model_has_no_list_price(model: str | None) -> None:
    # A longer name is another model with other prices (gpt-4o-audio-preview), not a version of a known one.
    assert list_price(model) is None and resolve_prices(model, None, None) is None


def test_the_flags_override_the_table_side_by_side() -> None:
    listed = resolve_prices("gpt-4o", None, None)
    assert listed is not None and (listed.input, listed.output) == (2.50, 10.00)
    assert PRICES_AS_OF in listed.source and "gpt-4o" in listed.source and "check" in listed.source
    both = resolve_prices("gpt-4o", 1.0, 2.0)
    assert both is not None and (both.input, both.output, both.source) == (1.0, 2.0, FLAGS)
    one = resolve_prices("gpt-4o", None, 3.0)
    assert one is not None and (one.input, one.output) == (2.50, 3.0) and one.source.startswith("--price-out, and") and PRICES_AS_OF in one.source
    unknown = resolve_prices("my-llama", 0.5, None)
    assert unknown is not None and (unknown.input, unknown.output) == (0.5, 0.0) and "priced at 0" in unknown.source
    usage = SimpleNamespace(prompt_tokens=2_000_000, completion_tokens=500_000)
    assert listed.cost(usage) == pytest.approx(2 * 2.50 + 0.5 * 10.00)


def dry_run(cli, tmp_path: Path, *flags: object):
    return cli("generate", "--teacher", "openai", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", tmp_path / "dry", "--limit", "2",
               "--tasks", "detail", "--dry-run", *flags)


def test_dry_run_prices_a_known_model_and_says_from_where(cli, tmp_path: Path) -> None:
    def cost_line(*flags: object) -> tuple[str, str]:
        result = dry_run(cli, tmp_path, *flags)
        assert result.exit_code == 0, result.output
        cost, _, source = next(line for line in result.output.splitlines() if line.startswith("estimated cost: ")).partition("; prices: ")
        return cost, source

    listed = cost_line("--model", "gpt-4o-mini-2024-07-18")
    assert listed[1].startswith(f"list prices of gpt-4o-mini as of {PRICES_AS_OF}")
    assert cost_line("--model", "gpt-4o-mini", "--price-in", "0.15", "--price-out", "0.6") == (listed[0], FLAGS)  # the list price, by hand
    flagged = cost_line("--model", "gpt-4o-mini", "--price-in", "150", "--price-out", "600")  # 1000x the list price
    assert flagged[1] == FLAGS and float(flagged[0].split()[2]) > 100 * float(listed[0].split()[2]) > 0
    assert "estimated cost" not in dry_run(cli, tmp_path, "--model", "my-own-model").output  # no prices, no cost


def test_generate_summary_says_this_runs_cost_and_the_folders(tmp_path: Path) -> None:
    import subprocess

    args = [sys.executable, "-m", "datagen.cli", "generate", "--teacher", "mock", "--captions", str(CAPTIONS), "--instances", str(INSTANCES),
            "--out", str(tmp_path / "out"), "--limit", "2", "--tasks", "detail", "--price-in", "2.5", "--price-out", "10", "--log-every", "1000"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    total = (manifest["usage"]["prompt_tokens"] * 2.5 + manifest["usage"]["completion_tokens"] * 10) / 1e6
    assert f"generate prices: {FLAGS}" in first.stderr.splitlines()
    assert f"cost: ${total:.4f} this run, ${total:.4f} for the folder in all (prices: {FLAGS})" in first.stderr, first.stderr
    again = subprocess.run(args, capture_output=True, text=True, timeout=120)  # a rerun: everything is done, nothing paid
    assert f"cost: $0.0000 this run, ${total:.4f} for the folder in all" in again.stderr, again.stderr
    mock_unpriced = subprocess.run([*args[:-6], "--log-every", "1000"], capture_output=True, text=True, timeout=120)
    assert "cost:" not in mock_unpriced.stderr and "prices:" not in mock_unpriced.stderr  # the mock teacher is not a hosted model


def test_judge_summary_says_its_cost(cli, tmp_path: Path) -> None:
    for name, teacher in (("a", "mock"), ("b", "mock-terse")):
        assert cli("generate", "--teacher", teacher, "--captions", CAPTIONS, "--instances", INSTANCES, "--out", tmp_path / name, "--limit", "2",
                   "--tasks", "detail", "--no-progress").exit_code == 0
    args = ["judge", tmp_path / "a", tmp_path / "b", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", tmp_path / "j", "--judge", "mock",
            "--bootstrap", "0", "--tasks", "detail", "--price-in", "1", "--price-out", "4", "--no-progress"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "j" / "summary.json").read_text(encoding="utf-8"))
    total = (summary["usage"]["prompt_tokens"] * 1 + summary["usage"]["completion_tokens"] * 4) / 1e6
    assert summary["cost"] == {"this_run": pytest.approx(total), "total": pytest.approx(total), "prices": FLAGS}
    assert f"cost: ${total:.4f} this run, ${total:.4f} for the folder in all (prices: {FLAGS})" in result.output
    rerun = cli(*args)
    assert f"cost: $0.0000 this run, ${total:.4f} for the folder in all" in rerun.output
    unpriced = cli(*args[:-5], "--no-progress", "--force")
    assert "cost" not in json.loads((tmp_path / "j" / "summary.json").read_text(encoding="utf-8")) and "cost:" not in unpriced.output


def test_a_live_run_of_a_known_model_is_priced_at_its_list_price(cli, tmp_path: Path) -> None:
    """No price flags, an OpenAI-compatible server answering as gpt-4o-mini: the progress and the summary price the
    tokens at the table's list price and say so."""
    from datagen.testing.mock_openai_server import MockServer, MockServerConfig

    with MockServer(MockServerConfig(api_key="sk-test")) as server:
        result = cli("generate", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", tmp_path / "live", "--limit", "2", "--tasks", "detail",
                     "--model", "gpt-4o-mini", "--base-url", server.base_url, "--log-every", "1000", env={"OPENAI_API_KEY": "sk-test"})
    assert result.exit_code == 0, result.output
    usage = json.loads((tmp_path / "live" / "manifest.json").read_text(encoding="utf-8"))["usage"]
    listed = resolve_prices("gpt-4o-mini", None, None)
    assert listed is not None and usage["prompt_tokens"] > 0
    total = listed.cost(SimpleNamespace(**usage))
    assert f"generate prices: {listed.source}" in result.output
    assert f"cost: ${total:.4f} this run, ${total:.4f} for the folder in all (prices: {listed.source})" in result.output
    assert "generate: 2/2 (100%)" in result.output and " | cost $" in result.output
