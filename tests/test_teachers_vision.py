"""Vision teachers (`generate --see image|both --images DIR`): what reaches the server, and what the run makes of it."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from datagen.errors import InputError
from datagen.testing.mock_openai_server import MockServer, MockServerConfig
from datagen.quality.parse import Rejected
from datagen.run.generate import generate
from datagen.run.options import GenerateOptions
from datagen.tasks.prompts import BUNDLED_PROMPTS
from datagen.tasks.registry import DEFAULT_TASKS, parse_answer
from datagen.teachers.vision import DATA_URL_PREFIX, _encode_cached, encode_image, image_tokens

from tests.conftest import CAPTIONS, INSTANCES

KEY = "sk-vision-test"
MAX_SIDE = 256
COLOURS = {"red": (200, 30, 30), "blue": (30, 30, 200), "green": (30, 160, 30)}


def sample_images() -> list[dict]:
    return json.loads(CAPTIONS.read_text(encoding="utf-8"))["images"]


def colour_of(index: int) -> str:
    return list(COLOURS)[index % len(COLOURS)]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """One plain-coloured JPEG per sample image, named and sized as the captions file says (the sample has no pixels)."""
    folder = tmp_path_factory.mktemp("images")
    for index, entry in enumerate(sample_images()):
        Image.new("RGB", (entry["width"], entry["height"]), COLOURS[colour_of(index)]).save(folder / entry["file_name"], quality=95)
    return folder


@pytest.fixture(scope="module")
def server():
    with MockServer(MockServerConfig(api_key=KEY, batch_delay_s=0.0)) as server:
        yield server


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def options(out: Path, server: MockServer, **changes) -> GenerateOptions:
    settings = dict(
        captions=CAPTIONS,
        instances=INSTANCES,
        out=out,
        tasks=list(DEFAULT_TASKS),
        teacher="openai",
        model="mock-teacher",
        base_url=server.base_url,
        max_retries=0,
        progress=False,
        image_max_side=MAX_SIDE,
    )
    return GenerateOptions(**{**settings, **changes})


def received(server: MockServer) -> list[dict]:
    """The chat request bodies as the mock server recorded them, read over its /_requests route."""
    root = server.base_url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(root + "/_requests") as response:
        return [entry["body"] for entry in json.load(response)]


def canonical(bodies: list[dict]) -> list[bytes]:
    return sorted(json.dumps(body, sort_keys=True).encode() for body in bodies)


def run_and_collect(server: MockServer, out: Path, **changes) -> tuple[list[dict], object]:
    server.reset()
    manifest = generate(options(out, server, **changes))
    return received(server), manifest


def decoded(url: str) -> Image.Image:
    assert url.startswith(DATA_URL_PREFIX)
    return Image.open(io.BytesIO(base64.b64decode(url[len(DATA_URL_PREFIX):])))


def query(body: dict):
    return body["messages"][-1]["content"]


def records(out: Path) -> list[dict]:
    return [json.loads(line) for task in DEFAULT_TASKS for line in (out / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()]


# --- the three regimes, as the server receives them ------------------------------------------------


def test_text_regime_sends_the_context_as_before(server, images, tmp_path):
    bodies, manifest = run_and_collect(server, tmp_path / "text", tasks=["detail"], images=images)
    assert len(bodies) == 22 and all(isinstance(query(body), str) for body in bodies)
    assert sum(": [" in query(body) for body in bodies) == 20  # two sample images have no boxes
    system = (BUNDLED_PROMPTS / "detail" / "system_message.txt").read_text(encoding="utf-8")
    assert all(body["messages"][0]["content"] == system for body in bodies)
    assert "see" not in manifest.settings.fingerprint_parts
    assert all("see" not in record["meta"] and "image_sha256" not in record["meta"] for record in records_of(tmp_path / "text", "detail"))


def records_of(out: Path, task: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_image_regime_sends_only_the_resized_image_and_the_teacher_sees_it(server, images, tmp_path):
    bodies, manifest = run_and_collect(server, tmp_path / "image", tasks=["detail"], see="image", images=images)
    assert len(bodies) == 22
    system = (BUNDLED_PROMPTS / "detail" / "system_message.image.txt").read_text(encoding="utf-8")
    for body in bodies:
        (part,) = query(body)
        assert part["type"] == "image_url"
        picture = decoded(part["image_url"]["url"])
        assert picture.format == "JPEG" and max(picture.size) == MAX_SIDE and not picture.info.get("exif")
        assert body["messages"][0]["content"] == system
        # Few-shot turns stay text: their contexts come without images.
        assert all(isinstance(message["content"], str) for message in body["messages"][:-1])
    by_file = {entry["file_name"]: (index, entry) for index, entry in enumerate(sample_images())}
    for record in records_of(tmp_path / "image", "detail"):
        index, entry = by_file[record["image"]]
        scale = MAX_SIDE / max(entry["width"], entry["height"])
        width, height = round(entry["width"] * scale), round(entry["height"] * scale)
        # The mock server answers from the pixels it received: size and mean colour.
        assert f"mostly {colour_of(index)} picture of {width} by {height} pixels" in record["conversations"][1]["value"]
        assert record["meta"]["see"] == "image" and record["meta"]["caption_ids"] == [] and record["meta"]["box_ids"] == []
        sent = encode_image(images / record["image"], MAX_SIDE)
        assert record["meta"]["image_sha256"] == sent.sha256
    assert manifest.settings.fingerprint_parts["see"] == "image"
    assert manifest.settings.fingerprint_parts["image_max_side"] == MAX_SIDE


def test_image_regime_needs_no_instances_file(server, images, tmp_path):
    bodies, manifest = run_and_collect(server, tmp_path / "out", tasks=["detail"], see="image", images=images, instances=None)
    assert manifest.counts["detail"].written == 22 and len(bodies) == 22
    with pytest.raises(InputError, match="--instances is required"):
        generate(options(tmp_path / "both", server, tasks=["detail"], see="both", images=images, instances=None))


def test_both_regime_sends_image_then_context(server, images, tmp_path):
    text_bodies, _ = run_and_collect(server, tmp_path / "text", tasks=["complex_reasoning"], images=images)
    both_bodies, _ = run_and_collect(server, tmp_path / "both", tasks=["complex_reasoning"], see="both", images=images)
    contexts = {body["seed"]: query(body) for body in text_bodies}
    for body in both_bodies:
        image_part, text_part = query(body)
        assert image_part["type"] == "image_url" and decoded(image_part["image_url"]["url"]).format == "JPEG"
        assert text_part == {"type": "text", "text": contexts[body["seed"]]}
    for record in records_of(tmp_path / "both", "complex_reasoning"):
        assert record["meta"]["see"] == "both" and record["meta"]["caption_ids"]


@pytest.mark.parametrize("see", ["image", "both"])
def test_bodies_are_byte_stable_across_runs_and_concurrency(server, images, tmp_path, see):
    _encode_cached.cache_clear()
    first, _ = run_and_collect(server, tmp_path / "a", see=see, images=images, concurrency=8)
    _encode_cached.cache_clear()
    second, _ = run_and_collect(server, tmp_path / "b", see=see, images=images, concurrency=1)
    assert len(first) == 66 and canonical(first) == canonical(second)
    assert sorted(map(json.dumps, records(tmp_path / "a"))) == sorted(map(json.dumps, records(tmp_path / "b")))


def test_encoding_is_deterministic_and_strips_metadata(tmp_path):
    path = tmp_path / "exif.jpg"
    exif = Image.Exif()
    exif[0x010F] = "SomeCamera"  # Make
    Image.new("RGB", (1000, 500), (10, 200, 10)).save(path, exif=exif)
    png = tmp_path / "alpha.png"
    Image.new("RGBA", (50, 80), (255, 0, 0, 128)).save(png)
    _encode_cached.cache_clear()
    once = encode_image(path, 300)
    _encode_cached.cache_clear()
    again = encode_image(path, 300)
    assert once == again and (once.width, once.height) == (300, 150)
    assert once.sha256 == hashlib.sha256(base64.b64decode(once.data_url[len(DATA_URL_PREFIX):])).hexdigest()
    assert "exif" not in decoded(once.data_url).info
    rotated = tmp_path / "rotated.jpg"
    turn = Image.Exif()
    turn[0x0112] = 6  # Orientation: the camera was held upright; viewers turn the picture 90 degrees
    Image.new("RGB", (1200, 600), (200, 200, 10)).save(rotated, exif=turn)
    upright = encode_image(rotated, 300)
    assert (upright.width, upright.height) == (150, 300) and decoded(upright.data_url).size == (150, 300)
    small = encode_image(png, 300)
    assert decoded(small.data_url).mode == "RGB" and (small.width, small.height) == (50, 80)  # never enlarged


# --- resume, cache, and images that cannot be shown ------------------------------------------------


def test_rerun_and_cache_send_nothing_again(server, images, tmp_path):
    out = tmp_path / "out"
    _, first = run_and_collect(server, out, see="image", images=images)
    assert first.requests_sent == 66
    _, resumed = run_and_collect(server, out, see="image", images=images)
    assert resumed.requests_sent == 0 and server.stats()["total"] == 0
    for task in DEFAULT_TASKS:
        (out / f"{task}.jsonl").unlink()
    _encode_cached.cache_clear()
    _, from_cache = run_and_collect(server, out, see="image", images=images)
    assert from_cache.requests_sent == 0 and from_cache.cache_hits == 66 and server.stats()["total"] == 0
    assert sum(counts.written for counts in from_cache.counts.values()) == 66


def test_a_changed_image_is_a_new_request(server, images, tmp_path):
    own = tmp_path / "images"
    own.mkdir()
    for path in images.iterdir():
        (own / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "out"
    run_and_collect(server, out, tasks=["detail"], see="image", images=own)
    first_name = sample_images()[0]["file_name"]
    Image.new("RGB", (64, 64), (250, 250, 250)).save(own / first_name)
    (out / "detail.jsonl").unlink()
    _, manifest = run_and_collect(server, out, tasks=["detail"], see="image", images=own)
    assert manifest.requests_sent == 1 and manifest.cache_hits == 21


def test_missing_and_unreadable_images_are_skipped_and_counted(server, images, tmp_path):
    own = tmp_path / "images"
    own.mkdir()
    entries = sample_images()
    for entry in entries[2:]:
        (own / entry["file_name"]).write_bytes((images / entry["file_name"]).read_bytes())
    (own / entries[1]["file_name"]).write_bytes(b"not a jpeg at all")
    bodies, manifest = run_and_collect(server, tmp_path / "out", see="both", images=own)
    assert len(bodies) == 60
    for task in DEFAULT_TASKS:
        assert manifest.counts[task].skipped == {"image_missing": 1, "image_unreadable": 1}
        assert manifest.counts[task].written == 20
    # The files turn up: a rerun asks for exactly the skipped items.
    for entry in entries[:2]:
        (own / entry["file_name"]).write_bytes((images / entry["file_name"]).read_bytes())
    bodies, manifest = run_and_collect(server, tmp_path / "out", see="both", images=own)
    assert len(bodies) == 6 and all(counts.written == 22 and not counts.skipped for counts in manifest.counts.values())


def test_a_folder_without_the_images_is_one_error_before_any_request(server, tmp_path, cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    server.reset()
    common = ["generate", "--captions", CAPTIONS, "--instances", INSTANCES, "--model", "mock-teacher", "--base-url", server.base_url, "--no-progress"]
    result = cli(*common, "--out", tmp_path / "out", "--see", "image", "--images", empty, env={"OPENAI_API_KEY": KEY})
    assert result.exit_code == 2 and result.output.count("error:") == 1
    assert f"--images {empty}" in result.output and "000000" in result.output
    assert server.stats()["total"] == 0
    missing = cli(*common, "--out", tmp_path / "out2", "--see", "both", env={"OPENAI_API_KEY": KEY})
    assert missing.exit_code == 2 and "--see both needs --images" in missing.output
    wrong = cli(*common, "--out", tmp_path / "out3", "--see", "pixels", env={"OPENAI_API_KEY": KEY})
    assert wrong.exit_code == 2 and "--see" in wrong.output and "Traceback" not in wrong.output
    assert server.stats()["total"] == 0


def test_switching_regime_in_one_folder_is_refused(server, images, tmp_path):
    out = tmp_path / "out"
    run_and_collect(server, out, tasks=["detail"], images=images)
    with pytest.raises(InputError, match="changed: .*see"):
        generate(options(out, server, tasks=["detail"], see="image", images=images))
    run_and_collect(server, tmp_path / "vision", tasks=["detail"], see="image", images=images)
    with pytest.raises(InputError, match="changed: .*see"):
        generate(options(tmp_path / "vision", server, tasks=["detail"], images=images))


# --- offline paths: dry run, requests-out, Batch API ----------------------------------------------


def test_image_tokens_follow_openais_tile_formula():
    assert image_tokens(1024, 1024) == 765  # 768x768: 4 tiles
    assert image_tokens(2048, 4096) == 1105  # 1024x2048 -> 768x1536: 6 tiles
    assert image_tokens(256, 192) == 255  # one tile
    assert image_tokens(4000, 3000, detail="low") == 85


def test_dry_run_counts_image_tokens(server, images, tmp_path):
    from datagen.run.estimate import estimate
    from datagen.run.handoff import planned_requests
    from datagen.teachers.vision import content_text_tokens

    text = estimate(options(tmp_path / "t", server, tasks=["detail"], dry_run=True))
    image = estimate(options(tmp_path / "i", server, tasks=["detail"], see="image", images=images, dry_run=True))
    both = estimate(options(tmp_path / "b", server, tasks=["detail"], see="both", images=images, dry_run=True))
    assert text.image_tokens == 0 and image.requests == both.requests == 22
    # Sent with the longer side at 256 px, every image is one 512-px tile.
    assert image.image_tokens == both.image_tokens == 22 * (85 + 170)
    assert text.skipped == image.skipped == {}
    contexts = sum(content_text_tokens(request.messages[-1]["content"]) for _, request in planned_requests(options(tmp_path / "t", server, tasks=["detail"])))
    assert both.prompt_tokens - image.prompt_tokens == contexts


def test_dry_run_counts_the_items_missing_images_would_skip(server, images, tmp_path):
    from datagen.run.estimate import describe, estimate

    own = tmp_path / "images"
    own.mkdir()
    for entry in sample_images()[3:]:
        (own / entry["file_name"]).write_bytes((images / entry["file_name"]).read_bytes())
    result = estimate(options(tmp_path / "out", server, see="both", images=own, dry_run=True))
    assert result.requests == 57 and result.skipped == {"image_missing": 9}
    assert "9 items would be skipped (image_missing 9)" in describe(result)


def test_the_mock_server_reports_image_tokens_in_usage(server, images, tmp_path):
    from datagen.teachers.vision import content_text_tokens

    bodies, manifest = run_and_collect(server, tmp_path / "i", tasks=["detail"], see="image", images=images)
    text_only = sum(content_text_tokens(message["content"]) for body in bodies for message in body["messages"])
    assert manifest.usage.prompt_tokens == text_only + 22 * (85 + 170)


def test_requests_out_and_results_in_carry_the_image_parts(server, images, tmp_path):
    from datagen.run.handoff import write_requests

    path = tmp_path / "requests.jsonl"
    handed = dict(tasks=["conversation"], see="image", images=images)
    written = write_requests(options(tmp_path / "handed", server, requests_out=path, **handed))
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert written == len(lines) == 22
    assert all(query(line["body"])[0]["type"] == "image_url" for line in lines)
    server.reset()
    generate(options(tmp_path / "live", server, **handed))
    assert canonical([line["body"] for line in lines]) == canonical(received(server))
    # Another engine answers the file (here: the mock server, one body at a time); ingesting sends nothing.
    results = []
    for line in lines:
        request = urllib.request.Request(
            server.base_url + "/chat/completions", data=json.dumps(line["body"]).encode(), headers={"Authorization": f"Bearer {KEY}"}
        )
        with urllib.request.urlopen(request) as response:
            results.append({"custom_id": line["custom_id"], "response": {"status_code": 200, "body": json.load(response)}, "error": None})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(result) + "\n" for result in results), encoding="utf-8")
    server.reset()
    ingested = generate(options(tmp_path / "handed", server, results_in=tmp_path / "results.jsonl", **handed))
    assert server.stats()["total"] == 0 and ingested.counts["conversation"].written == 22
    assert sorted(map(json.dumps, records_of(tmp_path / "handed", "conversation"))) == sorted(
        map(json.dumps, records_of(tmp_path / "live", "conversation"))
    )


def test_batch_files_split_on_bytes_and_match_a_live_run(server, images, tmp_path):
    limit = 60_000
    batched = generate(options(tmp_path / "batch", server, see="image", images=images, batch=True, poll_interval=0.01, batch_max_bytes=limit))
    inputs = sorted((tmp_path / "batch" / "batch").glob("input-*.jsonl"))
    assert len(inputs) > 2 and all(path.stat().st_size <= limit for path in inputs)
    lines = [json.loads(line) for path in inputs for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 66 and all(query(line["body"])[0]["type"] == "image_url" for line in lines)
    live = generate(options(tmp_path / "live", server, see="image", images=images))
    assert sorted(map(json.dumps, records(tmp_path / "batch"))) == sorted(map(json.dumps, records(tmp_path / "live")))
    assert batched.counts == live.counts


# --- the answer checks ---------------------------------------------------------------------------


def test_a_teacher_that_saw_only_the_image_may_read_text_in_it():
    # Text-mode checks read "the listed items" as our object list; a teacher that saw the chalkboard means the board.
    answer = "The listed items on the board include coffee and tea."
    assert parse_answer("detail", answer, "stop", see="image") == answer
    for see in ("text", "both"):
        with pytest.raises(Rejected) as rejected:
            parse_answer("detail", answer, "stop", see=see)
        assert rejected.value.reason == "reveals_text_source"


# --- the comparison a researcher reads -------------------------------------------------------------


def test_report_sets_a_text_run_beside_an_image_run(server, images, tmp_path):
    from datagen.data.report import write_report

    text = generate(options(tmp_path / "text", server, images=images))
    image = generate(options(tmp_path / "image", server, see="image", images=images))
    runs = write_report([tmp_path / "text", tmp_path / "image"], tmp_path / "report.html", None)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert [run.label for run in runs] == ["text (mock-teacher)", "image (mock-teacher)"]
    assert "captions and boxes as text" in page and "the image only" in page
    # the image run paid for the pictures: its prompt tokens, as the server reported them, are shown beside the text run's
    assert image.usage.prompt_tokens > text.usage.prompt_tokens
    assert f"{text.usage.prompt_tokens:,}" in page and f"{image.usage.prompt_tokens:,}" in page
    assert all(run.tasks[task].counts["written"] == 22 for run in runs for task in DEFAULT_TASKS)
