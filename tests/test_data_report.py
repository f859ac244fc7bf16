"""`datagen report`: the measures, the numbers on the page against the manifests, and the page in a real browser."""

from __future__ import annotations

import itertools
import json
import random
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from datagen.data.report import DistinctNGrams, near_duplicate_count, normalise_question, question_type

DATA = Path(__file__).resolve().parent.parent / "data"
CAPTIONS, INSTANCES = DATA / "captions.json", DATA / "instances.json"
TASK_NAMES = ("conversation", "detail", "complex_reasoning")
CHROMIUM = shutil.which("chromium")


# -- measures -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "question,kind",
    [
        ("<image>\nWhat is the man holding?", "what"),
        ("What's on the table?\n<image>", "what"),
        ("Where is the bus parked?", "where"),
        ("How many people are in the picture?", "how many"),
        ("How much food is left on the plate?", "how many"),
        ("How does the weather affect the game?", "how"),
        ("Why might the dogs be running?", "why"),
        ("Which side of the street is the car on?", "which"),
        ("Who is holding the umbrella?", "who"),
        ("Is the man wearing a hat?", "yes/no"),
        ("Are there any clouds in the sky?", "yes/no"),
        ("Does the kitchen look clean?", "yes/no"),
        ("Can you describe the scene in detail?", "describe"),
        ("Describe the following image.", "describe"),
        ("Explain the visual content of the image in great detail.", "describe"),
        ("In the image, what color is the frisbee?", "what"),
        ("Could you tell me what the woman is doing?", "describe"),
        ("A bus.", "other"),
        ("", "other"),
    ],
)
def test_question_types(question: str, kind: str) -> None:
    assert question_type(question) == kind


def test_distinct_n() -> None:
    distinct_1, distinct_2 = DistinctNGrams(1), DistinctNGrams(2)
    assert distinct_1.value is None
    for tokens in (["a", "red", "bus"], ["a", "red", "car"]):
        distinct_1.add(tokens)
        distinct_2.add(tokens)
    assert distinct_1.value == pytest.approx(4 / 6)  # a, red, bus, car of six words
    assert distinct_2.value == pytest.approx(3 / 4)  # (a red) twice, (red bus), (red car)


def test_near_duplicates_by_word_set() -> None:
    same_words = ["what color is the bus", "the bus is what color"]  # Jaccard 1
    close = ["what color is the large bus", "what color is the bus"]  # 5/6
    apart = ["what is the man holding", "what is the woman holding"]  # 4/6: not near
    assert near_duplicate_count(same_words) == 2
    assert near_duplicate_count(close) == 2
    assert near_duplicate_count(apart) == 0
    assert near_duplicate_count(close + apart + ["why is it raining"]) == 2
    assert near_duplicate_count(["what is it", "what is it"]) == 0  # exact repeats are counted separately


def test_near_duplicates_match_comparing_every_pair() -> None:
    """The prefix filter must find exactly what the quadratic comparison finds."""
    rng = random.Random(7)
    vocabulary = "what where is the a man woman dog bus red blue holding on table near sitting color two of".split()
    questions = list(dict.fromkeys(" ".join(rng.choices(vocabulary, k=rng.randint(3, 9))) for _ in range(400)))
    sets = [set(question.split()) for question in questions]
    partnered = set()
    for first, second in itertools.combinations(range(len(sets)), 2):
        if len(sets[first] & sets[second]) / len(sets[first] | sets[second]) >= 0.8:
            partnered |= {first, second}
    assert partnered, "the sample should contain near duplicates"
    assert near_duplicate_count(questions) == len(partnered)


def test_normalised_questions_ignore_case_punctuation_and_image_token() -> None:
    assert normalise_question("What is THIS?  ") == normalise_question("what is this") == "what is this"


# -- end to end -----------------------------------------------------------------------------------------


class Tables(HTMLParser):
    """The page's tables, each keyed by the heading above it (the first table under each heading), and its images."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self.heading, self.in_heading, self.rows, self.row, self.cell = "", False, None, None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "h2":
            self.in_heading, self.heading = True, ""
        elif tag == "table":
            self.rows = []
            self.tables.setdefault(self.heading, self.rows)
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = ""
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag == "h2":
            self.in_heading = False
        elif tag in ("td", "th"):
            self.row.append(self.cell.strip())
            self.cell = None
        elif tag == "tr":
            self.rows.append(self.row)

    def handle_data(self, data):
        if self.in_heading:
            self.heading += data
        elif self.cell is not None:
            self.cell += data


def section(page: Tables, heading: str) -> dict[str, list[str]]:
    return {row[0]: row[1:] for row in page.tables[heading]}


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.exists() else []


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> list[Path]:
    from typer.testing import CliRunner

    from datagen.cli import app

    root = tmp_path_factory.mktemp("report")
    folders = []
    for seed in (0, 1):
        out = root / f"seed{seed}"
        args = ["generate", "--teacher", "mock", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", out, "--seed", seed, "--no-progress"]
        result = CliRunner().invoke(app, [str(arg) for arg in args], env={"OPENAI_API_KEY": None})
        assert result.exit_code == 0, result.output
        folders.append(out)
    return folders


@pytest.fixture(scope="module")
def rendered(two_runs, tmp_path_factory) -> tuple[Path, str]:
    from typer.testing import CliRunner

    from datagen.cli import app

    out = tmp_path_factory.mktemp("page") / "report.html"
    args = ["report", *two_runs, "--out", out, "--price-in", "0.15", "--price-out", "0.6"]
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_page_numbers_match_the_manifests(two_runs, rendered) -> None:
    out, _ = rendered
    page = Tables(out.read_text(encoding="utf-8"))
    labels = page.tables["Runs"][0][1:]
    assert labels == ["seed0 (mock teacher)", "seed1 (mock teacher)"]
    runs = section(page, "Runs")
    for column, folder in enumerate(two_runs):
        manifest = json.loads((folder / "manifest.json").read_text())
        usage = manifest["usage"]
        assert runs["prompt / completion tokens (manifest)"][column] == f"{usage['prompt_tokens']:,} / {usage['completion_tokens']:,}"
        assert runs["cost (manifest tokens)"][column] == f"${usage['prompt_tokens'] / 1e6 * 0.15 + usage['completion_tokens'] / 1e6 * 0.6:,.4f}"
        assert runs["mock teacher"][column].startswith("yes")
        other = {key: value for key, value in usage.items() if key not in ("prompt_tokens", "completion_tokens")}
        assert runs["other usage (manifest)"][column] == (", ".join(f"{key} {value:,}" for key, value in sorted(other.items())) or "none")
        assert runs["seed / temperature / max tokens"][column] == f"{column} / 0.7 / 1024"
        for task in TASK_NAMES:
            rows, counts = section(page, task), manifest["counts"][task]
            assert rows["requested"][column] == str(counts["requested"])
            assert rows["written"][column] == f"{counts['written']} ({counts['written'] / counts['requested']:.1%})"
            records = read_lines(folder / f"{task}.jsonl")
            assert rows["records read"][column] == str(len(records))
            prompt = sum(record["meta"]["usage"]["prompt_tokens"] for record in records)
            completion = sum(record["meta"]["usage"]["completion_tokens"] for record in records)
            assert rows["prompt / completion tokens"][column] == f"{prompt:,} / {completion:,}"
            questions = [turn["value"] for record in records for turn in record["conversations"] if turn["from"] == "human"]
            distinct = {normalise_question(question.replace("<image>", "")) for question in questions}
            assert rows["questions (distinct)"][column] == f"{len(questions)} ({len(distinct)})"
            answers = [len(turn["value"].split()) for record in records for turn in record["conversations"] if turn["from"] == "gpt"]
            assert rows["answer words"][column].startswith(f"mean {sum(answers) / len(answers):.1f}, ")
            quality = (manifest.get("quality") or {}).get(task) or {}  # present once grounding is measured
            for key, row in (("chair_i", "CHAIR_i (unsupported mentions)"), ("chair_s", "CHAIR_s (answers with one)")):
                assert rows[row][column] == ("n/a" if quality.get(key) is None else f"{quality[key]:.3f}")
    # Both runs wrote every image: the comparison is over the same 22.
    assert section(page, "detail")["images written by every run"] == ["22", "22"]


def test_terminal_summary(rendered) -> None:
    _, output = rendered
    assert "seed0 (mock teacher)" in output and "seed1 (mock teacher)" in output
    assert "complex_reasoning" in output and output.rstrip().endswith("report.html")


def test_reasons_and_chair_from_the_manifest_or_the_records(two_runs, tmp_path: Path, cli) -> None:
    from_manifest, from_records = tmp_path / "a", tmp_path / "b"
    shutil.copytree(two_runs[0], from_manifest)
    shutil.copytree(two_runs[0], from_records)
    manifest = json.loads((from_manifest / "manifest.json").read_text())
    manifest["counts"]["detail"]["rejected"] = {"refusal": 2, "truncated": 1}
    manifest["counts"]["detail"]["skipped"] = {"request_failed": 3}
    manifest["quality"] = {"detail": {"records": 22, "chair_i": 0.0421, "chair_s": 0.1364}}
    (from_manifest / "manifest.json").write_text(json.dumps(manifest))
    without_quality = json.loads((from_records / "manifest.json").read_text())
    without_quality.pop("quality", None)  # grounding in the records only, as in a folder from before quality blocks
    (from_records / "manifest.json").write_text(json.dumps(without_quality))
    records = read_lines(from_records / "conversation.jsonl")
    for number, record in enumerate(records):  # 2 of 4 mentions unsupported, in 1 of 2 grounded records
        if number < 2:
            record["meta"]["grounding"] = {"mentioned": ["dog", "frisbee"], "unsupported": ["giraffe", "zebra"][: number * 2]}
        else:
            record["meta"].pop("grounding", None)  # not measured for the others
        record["meta"]["finish_reason"] = "stop"
    (from_records / "conversation.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    out = tmp_path / "r.html"
    result = cli("report", from_manifest, from_records, "--out", out)
    assert result.exit_code == 0, result.output
    page = Tables(out.read_text(encoding="utf-8"))
    assert page.tables["Runs"][0][1:] == ["a (mock teacher)", "b (mock teacher)"]
    detail, conversation = section(page, "detail"), section(page, "conversation")
    assert detail["rejected"][0] == "3: refusal 2, truncated 1" and detail["skipped"][0] == "3: request_failed 3"
    assert (detail["CHAIR_i (unsupported mentions)"][0], detail["CHAIR_s (answers with one)"][0], detail["CHAIR from"][0]) == ("0.042", "0.136", "manifest")
    assert (conversation["CHAIR_i (unsupported mentions)"][1], conversation["CHAIR_s (answers with one)"][1]) == ("0.500", "0.500")
    grounded = any("grounding" in record["meta"] for record in read_lines(from_manifest / "conversation.jsonl"))
    assert conversation["CHAIR from"] == ["records" if grounded else "n/a", "records"]
    assert conversation["unsupported of mentioned objects"][1] == "2 of 4"
    assert conversation["most often unsupported (records)"][1] == "giraffe 1, zebra 1"
    manifest["quality"]["detail"].update(mentions=95, unsupported_mentions=4)
    (from_manifest / "manifest.json").write_text(json.dumps(manifest))
    assert cli("report", from_manifest, "--out", out).exit_code == 0
    assert section(Tables(out.read_text(encoding="utf-8")), "detail")["unsupported of mentioned objects"] == ["4 of 95"]
    reported = [record["meta"].get("finish_reason") for record in read_lines(from_manifest / "conversation.jsonl")]
    assert conversation["finish reasons"][0] == ("n/a" if set(reported) == {None} else f"stop {reported.count('stop')}")
    assert conversation["finish reasons"][1] == f"stop {len(records)}"
    assert conversation["cost"][0].startswith("n/a")  # no prices given


def test_bad_input_is_one_line_and_exit_2(two_runs, tmp_path: Path, cli) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    shutil.copytree(two_runs[0], broken)
    (broken / "manifest.json").write_text("{not json")
    torn = tmp_path / "torn"
    shutil.copytree(two_runs[0], torn)
    with (torn / "detail.jsonl").open("a") as handle:
        handle.write("{half a line\n")
    cases = [
        ((empty, "--out", tmp_path / "x.html"), "empty: holds no manifest.json; pass the --out folder"),
        ((tmp_path / "missing", "--out", tmp_path / "x.html"), "missing: not found; pass the --out folder"),
        ((broken, "--out", tmp_path / "x.html"), "broken/manifest.json: not valid JSON"),
        ((torn, "--out", tmp_path / "x.html"), "detail.jsonl line 23: not valid JSON"),
        ((two_runs[0], "--out", tmp_path / "x.html", "--price-in", "1"), "--price-in and --price-out"),
        ((two_runs[0], "--out", tmp_path), "is a folder"),
    ]
    for args, message in cases:
        result = cli("report", *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "x.html").exists()


def test_without_matplotlib_report_names_the_extra_in_one_line(two_runs, tmp_path: Path, cli, monkeypatch) -> None:
    for module in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, module, None)  # `import` now fails as if it were not installed
    result = cli("report", *two_runs, "--out", tmp_path / "x.html")
    assert result.exit_code == 2, result.output
    assert "pip install 'datagen[report]'" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "x.html").exists()


@pytest.mark.parametrize("edit", [
    {"id": ["a", "list"]},
    {"id": {"an": "object"}},
    {"meta": {"grounding": {"mentioned": 5, "unsupported": 7}}},
    {"meta": {"grounding": {"mentioned": "dog", "unsupported": None}, "usage": "none", "finish_reason": [1]}},
    {"conversations": [{"from": ["human"], "value": ["x"]}, "not a turn"]},
    {"id": 7, "conversations": 5},  # issue 29 item 12: was a TypeError
], ids=["id-list", "id-object", "grounding-numbers", "grounding-strings", "turns", "turns-number"])
def test_a_hand_edited_line_is_counted_not_a_traceback(two_runs, tmp_path: Path, cli, edit) -> None:
    edited = tmp_path / "edited"
    shutil.copytree(two_runs[0], edited)
    lines = (edited / "detail.jsonl").read_text().splitlines()
    lines[0] = json.dumps({**json.loads(lines[0]), **edit})
    (edited / "detail.jsonl").write_text("\n".join(lines) + "\n")
    result = cli("report", edited, "--out", tmp_path / "x.html")
    assert result.exit_code == 0, (result.output, result.exception)
    assert (tmp_path / "x.html").stat().st_size > 0



# -- the page in a browser --------------------------------------------------------------------------

# Added to a copy of the page: once everything has loaded, each image records the size it decoded to.
PROBE = """<script>
window.addEventListener("load", () => {
  for (const image of document.images)
    image.setAttribute("data-decoded", image.complete && image.naturalWidth > 0 ? image.naturalWidth + "x" + image.naturalHeight : "no");
  document.body.setAttribute("data-probe", "done");
});
</script>"""
BROKEN_IMAGE = '<img alt="broken on purpose" src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA">'


def chromium(page: Path, profile: Path, *flags: str) -> str:
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--virtual-time-budget=10000", *flags, page.as_uri(),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium); .ci/run installs it")
def test_page_renders_its_plots_in_chromium(rendered, tmp_path: Path) -> None:
    out, _ = rendered
    text = out.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "<script" not in text  # self-contained, nothing to fetch
    images = Tables(text).images
    assert len(images) == 1 + len(TASK_NAMES) and all(src.startswith("data:image/png;base64,") for src in images)
    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("</body>", BROKEN_IMAGE + PROBE + "</body>"), encoding="utf-8")
    dom = chromium(probed, tmp_path / "profile", "--dump-dom")
    assert 'data-probe="done"' in dom
    decoded = re.findall(r'<img alt="([^"]*)"[^>]*data-decoded="([^"]*)"', dom)
    assert len(decoded) == len(images) + 1
    assert decoded[-1] == ("broken on purpose", "no")  # the probe does tell a broken image
    for alt, size in decoded[:-1]:
        width, height = map(int, size.split("x"))
        assert width > 600 and height > 150, (alt, size)
