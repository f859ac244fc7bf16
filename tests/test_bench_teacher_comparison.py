"""bench/teacher_comparison.py end to end on the mock teacher and the scripted judge (no model, seconds): the table it
writes must say what the run's own files say."""

import json
from pathlib import Path
from statistics import mean

from bench import teacher_comparison as bench


def test_the_table_reports_what_the_mock_run_wrote_audited_and_was_scored(tmp_path: Path) -> None:
    out, page = tmp_path / "results.md", tmp_path / "page.html"
    bench.main(["--images", "100042", "100013", "--teachers", "mock", "--judge", "mock", "--work", str(tmp_path / "work"),
                "--out", str(out), "--page", str(page)])
    run = tmp_path / "work" / "mock"
    manifest = json.loads((run / "manifest.json").read_text())
    records = [json.loads(line) for task in ("conversation", "detail", "complex_reasoning") for line in (run / f"{task}.jsonl").read_text().splitlines()]
    scores = [record["meta"]["judge"]["score"] for record in records]
    audit = json.loads((tmp_path / "work" / "mock.audit" / "summary.json").read_text())["total"]["quality"]
    detail_words = mean(len(turn["value"].split()) for record in records if record["meta"]["task"] == "detail"
                        for turn in record["conversations"] if turn["from"] == "gpt")

    row = next(line for line in out.read_text().splitlines() if line.startswith("| mock (mock) |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == f"{len(records)}/6" and len(records) == sum(task["written"] for task in manifest["counts"].values())
    assert cells[3] == f"{100 * audit['chair_s']:.0f}% / {100 * audit['chair_i']:.0f}%"
    assert cells[4].split(" / ")[1] == f"{detail_words:.0f}"
    assert cells[5].startswith(f"{mean(scores):.2f} (") and cells[5].endswith(f", {len(scores)})")
    # The judge scored every record and moved none (--min-score 1), and the page shows the run.
    assert len(scores) == 6 and not (run / "rejects.jsonl").read_text().strip()
    assert manifest["curation"]["steps"][-1]["settings"]["model"] == "mock-judge"
    assert "mock-judge" in out.read_text() and page.stat().st_size > 0


def test_a_teacher_with_nothing_written_gets_dashes_not_a_crash() -> None:
    row = {"teacher": "weak", "mock": False, "written": 0, "requested": 3, "rejected": {"repetition": 2, "unparseable": 1},
           "skipped": {"request_failed": 1}, "chair_s": None, "chair_i": None, "lengths": {"conversation": None, "detail": None},
           "judge": {"rules.txt": []}, "seconds_per_request": 12.4}
    line = bench.table([row]).splitlines()[-1]
    assert line == "| weak | 0/3 | repetition 2, unparseable 1, skipped: request_failed 1 | - | - / - | - (0 of 0) | 12 |"
