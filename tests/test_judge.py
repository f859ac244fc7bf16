"""`datagen judge`: reply parsing, both orders, failures counted, the summary's arithmetic, resume, bad input."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from datagen.judge.run import ORDERS, JudgeOptions, parse_scores, run_judge
from datagen.judge.inputs import JudgeItem, LoadedItems
from datagen.judge.stats import Pair, agreement, bootstrap_interval, pearson, percentile, ranks, spearman, summarise
from datagen.formats.records import TeacherInfo, Usage
from datagen.teachers.teacher import ChatReply, RetryableError, Teacher

DATA = Path(__file__).resolve().parent.parent / "data"
CAPTIONS, INSTANCES = DATA / "captions.json", DATA / "instances.json"


# -- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, scores",
    [
        ("8 6\nAnswer 1 is more precise.", (8, 6)),
        ("7, 9\nreasons", (7, 9)),
        ("8/10 6/10\nok", (8, 6)),
        ("Scores: 5 and 4", (5, 4)),
        ("**8 6**\nbold first line", (8, 6)),
        ("Assistant 1: 8\nAssistant 2: 6\nThe first is better.", (8, 6)),
        ("The first answer is precise.\nAnswer 1 score: 9\nAnswer 2 score: 3.5", (9, 3.5)),
        ("**Assistant 1**: 7/10\n**Assistant 2**: 10/10", (7, 10)),
    ],
)
def test_scores_are_read_from_the_forms_judges_write(reply, scores):
    parsed = parse_scores(reply)
    assert parsed is not None and parsed[0] == scores


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "Both answers are fine.",
        "8\nonly one score",
        "Answer 1 beats Answer 2 clearly.",
        "11 3\nout of range",
        "0 5\nout of range",
        "Assistant 1: 8\nno second score",
    ],
)
def test_a_reply_without_two_scores_is_no_judgement(reply):
    assert parse_scores(reply) is None


def test_the_reason_is_what_follows_the_score_line():
    assert parse_scores("6 8\nThe second names the dog.\nThe first misses it.")[1] == "The second names the dog. The first misses it."


# -- statistics ------------------------------------------------------------------------------------


def test_percentile_interpolates_like_numpy():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 20, 30], 0) == 10 and percentile([10, 20, 30], 100) == 30
    assert percentile([0, 10], 2.5) == pytest.approx(0.25)


def test_bootstrap_interval_of_constant_scores_is_the_point():
    assert bootstrap_interval([5, 5, 5], [10, 10, 10], 200, seed=1) == (200.0, 200.0)


def test_bootstrap_interval_on_known_two_item_distribution():
    # Resampling two pairs (5 vs 5) and (5 vs 10) gives 100 (p=1/4), 150 (p=1/2) or 200 (p=1/4):
    # with 1000 resamples the 2.5% and 97.5% points are the extremes, and the point estimate lies between.
    low, high = bootstrap_interval([5, 5], [5, 10], 1000, seed=0)
    assert (low, high) == (100.0, 200.0)
    assert bootstrap_interval([5, 5], [5, 10], 1000, seed=0) == (low, high)  # seeded: repeatable


def test_ranks_and_correlations():
    assert ranks([3, 1, 3, 2]) == [3.5, 1, 3.5, 2]
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_summary_of_known_pairs():
    pairs = [
        Pair(item_id="1", task="t", reference=8, candidate=6, order_flip=False),
        Pair(item_id="2", task="t", reference=6, candidate=6, order_flip=True),
        Pair(item_id="3", task="t", reference=6, candidate=9, order_flip=False),
        Pair(item_id="4", task="t", reference=4, candidate=3, order_flip=True),
    ]
    row = summarise(pairs, resamples=500, seed=0)
    assert (row.pairs, row.mean_reference, row.mean_candidate) == (4, 6.0, 6.0)
    assert row.relative_score == pytest.approx(100.0)
    assert (row.wins, row.ties, row.losses) == (1, 1, 2)
    assert row.order_flip_rate == 0.5
    assert row.ci95[0] < 100.0 < row.ci95[1]
    # a ratio of sums lies between the smallest and largest per-pair ratio (6/8 and 9/6), so the interval does too
    assert 75.0 <= row.ci95[0] and row.ci95[1] <= 150.0


def test_judge_agreement_on_known_pairs():
    first = [Pair(item_id=str(i), task="t", reference=5, candidate=c, order_flip=False) for i, c in enumerate([3, 5, 7, 9])]
    second = [Pair(item_id=str(i), task="t", reference=5, candidate=c, order_flip=False) for i, c in enumerate([4, 6, 8, 10])]
    result = agreement("a", "b", first, second)
    assert result.pairs == 4
    assert result.same_winner == 0.75  # item 1: tie for a, candidate for b
    assert result.pearson == pytest.approx(1.0) and result.spearman == pytest.approx(1.0)


# -- the run, with scripted judges -------------------------------------------------------------------


class ScriptedJudge(Teacher):
    """Gives the first-shown answer `first_bonus` more than a fixed per-item score, or fails on chosen items."""

    def __init__(self, model="scripted", first_bonus=0, no_scores_for=(), transient_for=()):
        self.info = TeacherInfo(kind="openai", model=model, mock=False)
        self.stats: Counter[str] = Counter()
        self.first_bonus, self.no_scores_for, self.transient_for = first_bonus, set(no_scores_for), set(transient_for)
        self.seen: list[str] = []

    async def complete(self, request):
        self.stats["requests"] += 1
        user = request.messages[-1]["content"]
        self.seen.append(user)
        question = user.split("<question>\n", 1)[1].split("\n</question>", 1)[0]
        if question in self.transient_for:
            raise RetryableError("HTTP 503")
        if question in self.no_scores_for:
            return ChatReply(text="Both are good answers.", finish_reason="stop", usage=Usage())
        first = user.split("<answer_1>\n", 1)[1].split("\n</answer_1>", 1)[0]
        second = user.split("<answer_2>\n", 1)[1].split("\n</answer_2>", 1)[0]
        scores = [len(first) % 5 + 3 + self.first_bonus, len(second) % 5 + 3]
        return ChatReply(text=f"{scores[0]} {scores[1]}\nscripted", finish_reason="stop", usage=Usage(prompt_tokens=10, completion_tokens=2))

    async def aclose(self):
        return None


def items(count=4):
    return [
        JudgeItem(item_id=f"q{i}", task="conv" if i % 2 else "detail", context="a dog on a red sofa", question=f"question {i}",
                  reference="A dog" + "!" * i, candidate="A dog lies on a red sofa")
        for i in range(count)
    ]


def options(tmp_path, **extra):
    return JudgeOptions(out=tmp_path / "judged", judge="openai", judge_models=["scripted"], concurrency=2, resamples=200, **extra)


def test_every_pair_is_judged_in_both_orders_and_scores_map_back(tmp_path):
    judge = ScriptedJudge()
    loaded = LoadedItems(items=items(), skipped={}, input_hashes={"x": "1"})
    summary, _ = run_judge(options(tmp_path), loaded, [judge])
    reviews = [json.loads(line) for line in (tmp_path / "judged" / "reviews.jsonl").read_text().splitlines()]
    assert Counter((r["item_id"], r["order"]) for r in reviews) == Counter({(f"q{i}", o): 1 for i in range(4) for o in ORDERS})
    for review in reviews:
        first, second = review["shown_scores"]
        expected = (first, second) if review["order"] == "reference_first" else (second, first)
        assert (review["reference_score"], review["candidate_score"]) == expected
        assert review["judge"]["model"] == "scripted" and review["mock"] is False
    # the reference answer is shown first in one order and second in the other
    assert sum("<answer_1>\nA dog!" in seen for seen in judge.seen) == 3
    assert summary["counts"] == {"requested": 8, "judged": 8, "failed": {}, "skipped": {}}
    assert summary["tables"]["scripted"]["all"]["order_flip_rate"] == 0.0


def test_position_bias_is_averaged_out_and_reported(tmp_path):
    biased = ScriptedJudge(first_bonus=3)
    loaded = LoadedItems(items=items(), skipped={}, input_hashes={"x": "1"})
    summary, text = run_judge(options(tmp_path), loaded, [biased])
    fair_dir = tmp_path / "fair"
    fair, _ = run_judge(JudgeOptions(out=fair_dir, judge_models=["scripted"], resamples=200), loaded, [ScriptedJudge()])
    # a bonus for whichever answer comes first adds the same 1.5 to both sides' averages
    biased_all, fair_all = summary["tables"]["scripted"]["all"], fair["tables"]["scripted"]["all"]
    assert biased_all["mean_reference"] == pytest.approx(fair_all["mean_reference"] + 1.5)
    assert biased_all["mean_candidate"] == pytest.approx(fair_all["mean_candidate"] + 1.5)
    assert biased_all["order_flip_rate"] > 0
    assert "order flips" in text


def test_failures_and_skips_are_counted_exactly(tmp_path):
    judge = ScriptedJudge(no_scores_for={"question 1"}, transient_for={"question 2"})
    loaded = LoadedItems(items=items(), skipped={"only_in_a": 1}, input_hashes={"x": "1"})
    summary, text = run_judge(options(tmp_path), loaded, [judge])
    counts = summary["counts"]
    assert counts["requested"] == 10  # (4 items + 1 unmatched) x 2 orders
    assert counts["judged"] == 4 and counts["failed"] == {"no_scores": 2}
    assert counts["skipped"] == {"only_in_a": 2, "request_failed": 2}
    assert counts["judged"] + sum(counts["failed"].values()) + sum(counts["skipped"].values()) == counts["requested"]
    assert summary["tables"]["scripted"]["all"]["pairs"] == 2
    failed = [json.loads(line) for line in (tmp_path / "judged" / "reviews.jsonl").read_text().splitlines() if '"ok":false' in line]
    assert {r["raw"] for r in failed} == {"Both are good answers."}
    # a rerun asks again only what failed transiently; the no-scores replies are final
    again = ScriptedJudge(no_scores_for={"question 1"})
    summary, _ = run_judge(options(tmp_path), loaded, [again])
    assert len(again.seen) == 2
    assert summary["counts"]["judged"] == 6 and summary["counts"]["skipped"] == {"only_in_a": 2}


def test_a_judge_that_never_gives_two_scores_fails_the_run_in_one_line(tmp_path):
    judge = ScriptedJudge(no_scores_for={f"question {i}" for i in range(4)} - {"question 3"}, transient_for={"question 3"})
    summary, _ = run_judge(options(tmp_path), LoadedItems(items=items(), skipped={}, input_hashes={"x": "1"}), [judge])
    assert summary["status"] == "failed"
    assert summary["counts"] == {"requested": 8, "judged": 0, "failed": {"no_scores": 6}, "skipped": {"request_failed": 2}}
    assert summary["failure"] == ("no pair was scored in both orders, so there is nothing to compare (no_scores 6, request_failed 2);"
                                  " see reviews.jsonl for the judge's replies")
    assert json.loads((tmp_path / "judged" / "summary.json").read_text())["failure"] == summary["failure"]


def test_a_killed_run_resumes_from_its_reviews(tmp_path):
    loaded = LoadedItems(items=items(), skipped={}, input_hashes={"x": "1"})
    first, _ = run_judge(options(tmp_path), loaded, [ScriptedJudge()])
    reviews = tmp_path / "judged" / "reviews.jsonl"
    lines = reviews.read_text().splitlines(keepends=True)
    reviews.write_text("".join(lines[:5]) + lines[5][:30])  # as a kill -9 mid-write leaves it
    judge = ScriptedJudge()
    second, _ = run_judge(options(tmp_path), loaded, [judge])
    # the torn line's judgement and the two never written are redone, from the cache: nothing is paid twice
    assert judge.stats["cache_hits"] == 3 and judge.seen == []
    assert len(reviews.read_text().splitlines()) == 8
    assert second["tables"] == first["tables"]


def test_changed_settings_are_refused_unless_forced(tmp_path):
    from datagen.errors import InputError

    loaded = LoadedItems(items=items(), skipped={}, input_hashes={"x": "1"})
    run_judge(options(tmp_path), loaded, [ScriptedJudge()])
    with pytest.raises(InputError, match="changed: temperature"):
        run_judge(options(tmp_path, temperature=0.9), loaded, [ScriptedJudge()])
    run_judge(options(tmp_path, temperature=0.9, force=True), loaded, [ScriptedJudge()])
    assert list((tmp_path / "judged").glob("replaced-*/reviews.jsonl"))


# -- the command line ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_teachers(tmp_path_factory):
    """The sample data generated by the default mock teacher (A) and the terse variant (B)."""
    from typer.testing import CliRunner

    from datagen.cli import app

    root = tmp_path_factory.mktemp("teachers")
    for name, teacher in (("a", "mock"), ("b", "mock-terse")):
        result = CliRunner().invoke(app, ["generate", "--teacher", teacher, "--captions", str(CAPTIONS), "--instances",
                                          str(INSTANCES), "--out", str(root / name), "--no-progress"])
        assert result.exit_code == 0, result.output
    return root


def test_judge_two_generate_folders_with_two_mock_judges(cli, two_teachers, tmp_path):
    out = tmp_path / "judged"
    args = ["judge", two_teachers / "a", two_teachers / "b", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", out,
            "--judge", "mock", "--judge-model", "overlap", "--judge-model", "length", "--bootstrap", "200"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mock"] is True and [j["model"] for j in summary["judges"]] == ["mock-overlap", "mock-length"]
    written = {task: len((two_teachers / "a" / f"{task}.jsonl").read_text().splitlines()) for task in ("conversation", "detail", "complex_reasoning")}
    table = summary["tables"]["mock-length"]
    assert {task: table[task]["pairs"] for task in written} == written
    # the terse teacher writes less: the length judge prefers the default mock's records nearly everywhere
    assert table["all"]["relative_score"] < 100 and table["all"]["losses"] > table["all"]["wins"]
    counts = summary["counts"]
    assert counts["judged"] + sum(counts["failed"].values()) + sum(counts["skipped"].values()) == counts["requested"]
    assert summary["agreement"][0]["pairs"] == sum(written.values())
    reviews = [json.loads(line) for line in (out / "reviews.jsonl").read_text().splitlines()]
    assert all(r["mock"] and r["judge"]["mock"] for r in reviews)
    assert "mock: a heuristic" in result.output and "same winner" in result.output
    conversation = next(r for r in reviews if r["task"] == "conversation")
    assert conversation["item_id"].isdigit() and len(conversation["item_id"]) == 12
    # rerunning is a no-op that reports the same summary
    again = cli(*args)
    assert again.exit_code == 0 and json.loads((out / "summary.json").read_text())["tables"] == summary["tables"]
    assert len((out / "reviews.jsonl").read_text().splitlines()) == len(reviews)


def write_jsonl(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def bench_files(tmp_path: Path) -> dict[str, Path]:
    questions = [
        {"question_id": 1, "image": "000000100013.jpg", "text": "What is on the table?", "category": "conv"},
        {"question_id": 2, "image": "000000100013.jpg", "text": "Describe the image in detail.", "category": "detail"},
        {"question_id": 3, "image": "000000100027.jpg", "text": "Why might the bus stop here?", "category": "complex"},
        {"question_id": 4, "image": "missing.jpg", "text": "Anything?", "category": "conv"},
    ]
    context = [
        {"image": "000000100013.jpg", "caption": "A plate of pasta on a wooden table.\nA fork beside a plate."},
        {"image": "000000100027.jpg", "caption": ["A city bus at a stop.", "People board a bus."],
         "boxes": [{"category": "bus", "bbox": [0.0, 0.2, 0.6, 0.9]}]},
    ]
    reference = [{"question_id": i, "text": text} for i, text in
                 ((1, "A plate of pasta and a fork."), (2, "A wooden table holds a plate of pasta with a fork beside it."),
                  (3, "People are boarding, so it is a bus stop."), (4, "Nothing."))]
    candidate = [{"question_id": i, "text": "Pasta."} for i in (1, 2, 3, 4)]
    return {name: write_jsonl(tmp_path / f"{name}.jsonl", lines) for name, lines in
            (("questions", questions), ("context", context), ("reference", reference), ("candidate", candidate))}


def test_judge_llava_answer_files(cli, tmp_path):
    files = bench_files(tmp_path)
    out = tmp_path / "judged"
    result = cli("judge", "--reference", files["reference"], "--candidate", files["candidate"], "--questions", files["questions"],
                 "--context", files["context"], "--out", out, "--judge", "mock")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["tables"]["mock-overlap"]) == {"conv", "detail", "complex", "all"}
    assert summary["counts"]["skipped"] == {"no_context": 2}
    reviews = [json.loads(line) for line in (out / "reviews.jsonl").read_text().splitlines()]
    assert {r["item_id"] for r in reviews} == {"1", "2", "3"}
    assert all(r["reference_score"] >= r["candidate_score"] for r in reviews)  # a one-word answer scores lower here


def test_judge_sees_context_rendered_as_formats_section_2(tmp_path):
    from datagen.judge.inputs import items_from_files

    files = bench_files(tmp_path)
    loaded = items_from_files(files["reference"], files["candidate"], files["questions"], files["context"])
    bus = next(item for item in loaded.items if item.item_id == "3")
    assert bus.context == "A city bus at a stop.\nPeople board a bus.\n\nbus: [0.0, 0.2, 0.6, 0.9]"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--reference", "nope.jsonl"], "missing --candidate, --questions, --context"),
        (["A", "B", "C"], "pass exactly two"),
        (["A", "B"], "--captions"),
    ],
)
def test_bad_invocations_are_one_line_errors(cli, tmp_path, args, message):
    result = cli("judge", *args, "--out", tmp_path / "o", "--judge", "mock")
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_broken_answer_file_is_named(cli, tmp_path):
    files = bench_files(tmp_path)
    files["candidate"].write_text('{"question_id": 1, "text": "ok"}\n{broken\n')
    result = cli("judge", "--reference", files["reference"], "--candidate", files["candidate"], "--questions", files["questions"],
                 "--context", files["context"], "--out", tmp_path / "o", "--judge", "mock")
    assert result.exit_code == 2 and f"--candidate {files['candidate']} line 2: not valid JSON" in result.output


def test_openai_judge_needs_a_key_and_never_writes_it(cli, tmp_path):
    files = bench_files(tmp_path)
    common = ["judge", "--reference", files["reference"], "--candidate", files["candidate"], "--questions", files["questions"],
              "--context", files["context"], "--out", tmp_path / "o", "--judge-model", "gpt-4o"]
    result = cli(*common)
    assert result.exit_code == 2 and "OPENAI_API_KEY" in result.output
    result = cli(*common[:-2])
    assert result.exit_code == 2 and "--judge-model is required" in result.output


def test_openai_judge_through_the_mock_server(cli, tmp_path):
    """The real client path: an OpenAI-compatible server whose answers hold no scores are counted failures."""
    from datagen.testing.mock_openai_server import MockServer, MockServerConfig

    files = bench_files(tmp_path)
    out = tmp_path / "o"
    with MockServer(MockServerConfig(api_key="sk-secret-judge")) as server:
        result = cli("judge", "--reference", files["reference"], "--candidate", files["candidate"], "--questions",
                     files["questions"], "--context", files["context"], "--out", out, "--judge-model", "judge-x",
                     "--base-url", server.base_url, env={"OPENAI_API_KEY": "sk-secret-judge"})
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    counts = summary["counts"]
    assert counts["requested"] == 8 and counts["judged"] + counts["failed"].get("no_scores", 0) == 6
    for path in out.iterdir():
        if path.is_file():
            assert b"sk-secret-judge" not in path.read_bytes(), path


def test_kill_9_then_rerun_gives_every_judgement_once(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from datagen.testing.mock_openai_server import MockServer, MockServerConfig

    count = 60
    questions = [{"question_id": i, "image": "x.jpg", "text": f"Question {i}?", "category": "conv"} for i in range(count)]
    files = {
        "questions": write_jsonl(tmp_path / "q.jsonl", questions),
        "context": write_jsonl(tmp_path / "c.jsonl", [{"image": "x.jpg", "caption": "A red bus on a street."}]),
        "reference": write_jsonl(tmp_path / "r.jsonl", [{"question_id": i, "text": f"A red bus {i}."} for i in range(count)]),
        "candidate": write_jsonl(tmp_path / "k.jsonl", [{"question_id": i, "text": "A bus."} for i in range(count)]),
    }
    out = tmp_path / "judged"
    command = [sys.executable, "-m", "datagen.cli", "judge", "--out", str(out), "--judge-model", "judge-x", "--concurrency", "4",
               *(arg for name, path in files.items() for arg in (f"--{name}", str(path)))]
    with MockServer(MockServerConfig(latency_ms=30)) as server:
        env = {"PATH": os.environ.get("PATH", ""), "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url,
               "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        reviews = out / "reviews.jsonl"
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if reviews.exists() and reviews.stat().st_size > 20_000:
                break
            time.sleep(0.02)
        killed = process.poll() is None
        if killed:
            process.send_signal(signal.SIGKILL)
        process.wait()
        final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        requests = server.stats()["total"]
    assert final.returncode == 0, final.stderr
    assert killed, "the first run finished before it could be killed"
    lines = [json.loads(line) for line in reviews.read_text().splitlines()]
    assert sorted((line["item_id"], line["order"]) for line in lines) == sorted((str(i), o) for i in range(count) for o in ORDERS)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["judged"] + summary["counts"]["failed"].get("no_scores", 0) == 2 * count
    assert requests <= 2 * count + 4  # only judgements in flight at the kill are asked twice


def test_judge_prompt_file_replaces_ours(cli, tmp_path):
    import hashlib

    files = bench_files(tmp_path)
    prompt = tmp_path / "my_judge.txt"
    prompt.write_text("Score both answers from 1 to 10; scores on the first line.\n")
    common = ["judge", "--reference", files["reference"], "--candidate", files["candidate"], "--questions", files["questions"],
              "--context", files["context"], "--judge", "mock"]
    result = cli(*common, "--out", tmp_path / "mine", "--judge-prompt", prompt)
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "mine" / "judge.json").read_text())
    assert settings["fingerprint_parts"]["system_prompt"] == hashlib.sha256(prompt.read_bytes()).hexdigest()
    result = cli(*common, "--out", tmp_path / "other", "--judge-prompt", tmp_path / "missing.txt")
    assert result.exit_code == 2 and "--judge-prompt" in result.output and "missing.txt" in result.output


def test_folders_made_from_other_captions_are_refused(cli, two_teachers, tmp_path):
    import shutil

    other = tmp_path / "b"
    shutil.copytree(two_teachers / "b", other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["settings"]["fingerprint_parts"]["captions_sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(manifest))
    result = cli("judge", two_teachers / "a", other, "--captions", CAPTIONS, "--out", tmp_path / "o", "--judge", "mock")
    assert result.exit_code == 2 and "another captions file" in result.output
    result = cli("judge", two_teachers / "a", tmp_path / "nowhere", "--captions", CAPTIONS, "--out", tmp_path / "o", "--judge", "mock")
    assert result.exit_code == 2 and "nowhere: not found; pass the --out folder of a `datagen generate`" in result.output


def test_judge_shows_its_progress_where_there_is_no_terminal(cli, two_teachers, tmp_path):
    """CI logs and Slurm see a judge run move: greppable `judge: DONE/TOTAL` lines, the last one at the end."""
    args = ["judge", two_teachers / "a", two_teachers / "b", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", tmp_path / "j",
            "--judge", "mock", "--judge-model", "overlap", "--bootstrap", "0"]
    every = cli(*args, "--log-every", "0.000001")
    assert every.exit_code == 0, every.output
    lines = [line for line in every.output.splitlines() if line.startswith("judge: ")]
    total = len((tmp_path / "j" / "reviews.jsonl").read_text().splitlines())  # every judgement, both orders
    assert len(lines) >= 2 and lines[-1].startswith(f"judge: {total}/{total} (100%)"), lines[-3:]
    assert all(" rec/s | rejects " in line and " | retries 0 | " in line for line in lines)
    quiet = cli(*args, "--no-progress")  # a rerun: nothing left, and no lines asked for
    assert quiet.exit_code == 0 and not [line for line in quiet.output.splitlines() if line.startswith("judge: ")]
