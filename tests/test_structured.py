"""Structured output (`generate --structured`, datagen/tasks/structured.py): the schemas, the JSON read back into
the same records and checks, the one re-ask, and a server that refuses the field."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from datagen.quality.parse import Rejected
from datagen.tasks.registry import DEFAULT_TASKS, TASKS, task_spec
from datagen.tasks.structured import DETAIL_MAX_CHARS, NotInSchema, fits_schema, from_json, json_reply, parse_structured, reply_schema, response_format, schema_of
from datagen.teachers.teacher import ChatRequest
from datagen.testing.mock_openai_server import MockServer, MockServerConfig
from tests.synthetic import write_coco

KEY = "sk-structured-test-SECRET"
CONVERSATION, DETAIL, REASONING = task_spec("conversation"), task_spec("detail"), task_spec("complex_reasoning")


def _pairs(*pairs: tuple[str, str]) -> str:
    return json.dumps({"pairs": [{"question": q, "answer": a} for q, a in pairs]})


def test_each_task_has_its_reply_form_as_a_schema():
    conversation = reply_schema(CONVERSATION)["properties"]["pairs"]
    assert conversation["minItems"] == 1 and "maxItems" not in conversation
    assert conversation["items"]["required"] == ["question", "answer"] and conversation["items"]["additionalProperties"] is False
    assert reply_schema(REASONING) == conversation["items"]  # exactly one pair: the pair itself
    assert reply_schema(DETAIL)["required"] == ["description"] and reply_schema(DETAIL)["properties"]["description"]["type"] == "string"
    form = response_format(DETAIL)
    assert form["type"] == "json_schema" and form["json_schema"]["name"] == "datagen_detail" and form["json_schema"]["schema"] == reply_schema(DETAIL)


def test_no_string_bound_is_put_in_the_schema():
    """OpenAI's strict mode refuses minLength/maxLength, and llama.cpp cannot build a grammar for a 1,500-character
    maximum (its server died on it): the bounds are checked on reading the reply back."""
    for task in TASKS:
        text = json.dumps(reply_schema(task_spec(task)))
        assert "minLength" not in text and "maxLength" not in text


def test_a_json_reply_reads_back_into_the_records_a_text_reply_gives():
    pairs = [("What are the dogs chasing?", "They are chasing a red frisbee across the park."),
             ("Who is watching them?", "A man stands on the right and watches the two dogs play.")]
    text = "\n===\n".join(f"Question:\n{q}\n===\nAnswer:\n{a}" for q, a in pairs)
    assert parse_structured(CONVERSATION, _pairs(*pairs), "stop") == CONVERSATION.parse(text, "stop") == pairs
    description = "Two dogs run across a grassy park after a red frisbee while a man watches them from the right."
    assert parse_structured(DETAIL, json.dumps({"description": description}), "stop") == description


@pytest.mark.parametrize(
    ("spec", "reply", "reason", "detail"),
    [
        (CONVERSATION, "Question:\nWhat is it?\n===\nAnswer:\nA dog.", "unparseable", "not JSON of the conversation schema"),
        (CONVERSATION, json.dumps({"pairs": []}), "unparseable", "non-empty list"),
        (CONVERSATION, json.dumps({"pairs": [{"question": "Why?"}]}), "unparseable", "pair 1 is not an object with exactly question, answer"),
        (CONVERSATION, json.dumps({"pairs": [{"question": " ", "answer": "Yes."}]}), "unparseable", "non-empty strings"),
        (DETAIL, json.dumps({"description": "A dog.\n\nA frisbee."}), "unparseable", "one paragraph"),
        (DETAIL, json.dumps({"description": "A dog runs. " * 200}), "unparseable", f"at most {DETAIL_MAX_CHARS} characters"),
        (DETAIL, json.dumps({"text": "A dog."}), "unparseable", "exactly description"),
        (REASONING, _pairs(("Why?", "Because it is sunny.")), "unparseable", "the reply is not an object with exactly question, answer"),
        (CONVERSATION, json.dumps({"question": "Why?", "answer": "Because."}), "unparseable", "only field, pairs"),
    ],
)
def test_a_reply_not_in_the_schema_is_refused_and_earns_a_re_ask(spec, reply, reason, detail):
    with pytest.raises(NotInSchema) as refused:
        from_json(spec, reply)
    assert refused.value.reason == reason and detail in refused.value.detail
    assert not fits_schema(spec, reply, "stop")


def test_a_cut_reply_is_truncated_not_re_asked():
    cut = '{"pairs": [{"question": "What is'
    assert fits_schema(CONVERSATION, cut, "length")
    with pytest.raises(Rejected) as refused:
        parse_structured(CONVERSATION, cut, "length")
    assert refused.value.reason == "truncated"


def test_the_text_checks_still_apply_to_json_replies():
    loop = "The two dogs are running across the grassy park after the red frisbee."
    with pytest.raises(Rejected) as refused:
        parse_structured(DETAIL, json.dumps({"description": f"{loop} {loop}"}), "stop")
    assert refused.value.reason == "repetition"


def test_json_reply_writes_the_mock_answer_in_the_schema():
    text = "Question:\nWhat is it?\n===\nAnswer:\nA dog on the grass."
    assert json.loads(json_reply(reply_schema(CONVERSATION), text)) == {"pairs": [{"question": "What is it?", "answer": "A dog on the grass."}]}
    assert json.loads(json_reply(reply_schema(DETAIL), "One.\n\nTwo.")) == {"description": "One. Two."}
    assert json.loads(json_reply(reply_schema(REASONING), text)) == {"question": "What is it?", "answer": "A dog on the grass."}


def test_the_older_json_object_form_carries_the_same_schema():
    for spec in (CONVERSATION, DETAIL):
        older = response_format(spec, "json_object")
        assert older == {"type": "json_object", "schema": reply_schema(spec)}
        assert schema_of(older) == schema_of(response_format(spec)) == reply_schema(spec)
    assert schema_of({"type": "json_object"}) is None and schema_of(None) is None


def test_a_request_without_response_format_keeps_its_body_and_key():
    plain = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}], temperature=0.7, max_tokens=10, seed=1)
    assert plain.encoded() == b'{"max_tokens":10,"messages":[{"content":"hi","role":"user"}],"model":"m","seed":1,"temperature":0.7}'
    asked = plain.model_copy(update={"response_format": response_format(DETAIL)})
    assert json.loads(asked.encoded())["response_format"] == response_format(DETAIL) and asked.key() != plain.key()


def test_mock_teacher_structured_run_writes_the_records_of_a_text_run(generate_mock, tmp_path):
    """Same requests but the schema: the mock's Question/Answer answers come back as JSON and make the same records."""
    generate_mock(tmp_path / "text", "--limit", "3")
    generate_mock(tmp_path / "json", "--limit", "3", "--structured")
    for task in ("conversation", "complex_reasoning"):
        text = [json.loads(line)["conversations"] for line in (tmp_path / "text" / f"{task}.jsonl").read_text().splitlines()]
        structured = [json.loads(line)["conversations"] for line in (tmp_path / "json" / f"{task}.jsonl").read_text().splitlines()]
        assert structured == text and len(text) == 3
    manifest = json.loads((tmp_path / "json" / "manifest.json").read_text())
    assert manifest["structured_reasks"] == {} and manifest["settings"]["fingerprint_parts"]["structured"] == "json_schema"
    assert "structured_reasks" not in json.loads((tmp_path / "text" / "manifest.json").read_text())


def test_switching_structured_on_in_an_existing_folder_is_refused(generate_mock, tmp_path):
    generate_mock(tmp_path / "run", "--limit", "1")
    result = generate_mock(tmp_path / "run", "--limit", "1", "--structured", expect=2)
    assert "structured" in result.output


def _generate(cli, server, coco, out, *extra):
    captions, instances = coco
    return cli("generate", "--captions", captions, "--instances", instances, "--out", out, "--model", "mock-teacher", "--no-progress",
               "--max-retries", "1", "--structured", *extra, env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.base_url})


def _bodies(server: MockServer) -> list[dict]:
    with urllib.request.urlopen(server.base_url.removesuffix("/v1") + "/_requests", timeout=5) as response:
        return [seen["body"] for seen in json.loads(response.read())]


def test_mock_server_answers_in_the_schema_and_each_body_carries_it(cli, tmp_path):
    coco = write_coco(tmp_path, images=3)
    with MockServer() as server:
        result = _generate(cli, server, coco, tmp_path / "out")
        bodies = _bodies(server)
    assert result.exit_code == 0, result.output
    assert len(bodies) == 3 * len(DEFAULT_TASKS)
    assert sorted(body["response_format"]["json_schema"]["name"] for body in bodies) == sorted(f"datagen_{task}" for task in DEFAULT_TASKS for _ in range(3))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert all(counts["written"] == 3 for counts in manifest["counts"].values()) and manifest["structured_reasks"] == {}


def test_a_reply_off_the_schema_is_asked_once_more_and_counted(cli, tmp_path):
    """A server that takes the schema as a hint: the items whose first reply is off it are asked once more, with
    another seed; those whose re-ask is off it too are refused as unparseable."""
    coco = write_coco(tmp_path, images=8)
    with MockServer(MockServerConfig(quirks={"off_schema": 0.5})) as server:
        result = _generate(cli, server, coco, tmp_path / "out")
        bodies = _bodies(server)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    reasks = manifest["structured_reasks"]
    assert len(bodies) == 8 * len(DEFAULT_TASKS) + sum(reasks.values())
    assert sum(reasks.values()) > 0, "with half the replies off the schema, some item must have been re-asked"
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()] if (tmp_path / "out" / "rejects.jsonl").exists() else []
    for task, counts in manifest["counts"].items():
        assert counts["written"] + counts["rejected"].get("unparseable", 0) == 8
        assert counts["rejected"].get("unparseable", 0) <= reasks.get(task, 0)  # only a re-asked item can end off the schema
    assert all("not JSON of the" in row["detail"] for row in rejects)
    assert result.exit_code == 0, result.output


def test_a_server_refusing_response_format_names_the_flag_in_one_line(cli, tmp_path):
    coco = write_coco(tmp_path, images=2)
    with MockServer(MockServerConfig(quirks={"no_response_format": 1.0})) as server:
        result = _generate(cli, server, coco, tmp_path / "out")
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.output and result.exit_code == 2
    assert len(lines) == 1 and "drop --structured" in lines[0] and "--structured-form json_object" in lines[0] and KEY not in lines[0]
    assert not any(Path(tmp_path / "out" / f"{task}.jsonl").exists() and Path(tmp_path / "out" / f"{task}.jsonl").read_text() for task in DEFAULT_TASKS)


def test_structured_with_batch_is_refused_in_one_line(generate_mock, tmp_path):
    result = generate_mock(tmp_path / "out", "--structured", "--batch", expect=2)
    assert "--structured" in result.output and "--batch" in result.output


def test_json_object_form_is_sent_when_asked(cli, tmp_path):
    coco = write_coco(tmp_path, images=2)
    with MockServer() as server:
        result = _generate(cli, server, coco, tmp_path / "out", "--structured-form", "json_object")
        bodies = _bodies(server)
    assert result.exit_code == 0, result.output
    schemas = [reply_schema(task_spec(task)) for task in DEFAULT_TASKS]
    assert len(bodies) == 2 * len(DEFAULT_TASKS)
    assert all(body["response_format"]["type"] == "json_object" and body["response_format"]["schema"] in schemas for body in bodies)


def test_structured_form_without_structured_is_refused(generate_mock, tmp_path):
    result = generate_mock(tmp_path / "out", "--structured-form", "json_object", expect=2)
    assert "add --structured" in result.output


def test_llama_cpp_python_s_500_for_the_schema_form_names_the_other_form(cli, tmp_path):
    """llama-cpp-python's server answers OpenAI's json_schema form with a 500 (a validation error): not retried until
    the run gives up, but one line naming --structured-form json_object, which it takes."""
    coco = write_coco(tmp_path, images=2)
    with MockServer(MockServerConfig(quirks={"response_format_500": 1.0})) as server:
        refused = _generate(cli, server, coco, tmp_path / "a")
        taken = _generate(cli, server, coco, tmp_path / "b", "--structured-form", "json_object")
        stats = server.stats()
    [line] = [line for line in refused.output.splitlines() if line.startswith("error:")]
    assert refused.exit_code == 2 and "HTTP 500" in line and "--structured-form json_object" in line
    assert stats["response_format_500"] == 1  # no retries
    assert taken.exit_code == 0, taken.output


def test_a_task_of_several_exact_pairs_gets_them_bounded_and_counted():
    from datagen.tasks.registry import ResponseFormat, TaskSpec, register, unregister

    spec = register(TaskSpec("two_pairs", ("conversation",), "captions", ResponseFormat.QA_PAIRS, pairs=2))
    try:
        schema = reply_schema(spec)["properties"]["pairs"]
        assert schema["minItems"] == schema["maxItems"] == 2
        with pytest.raises(NotInSchema) as refused:
            from_json(spec, _pairs(("Why?", "Because.")))
        assert refused.value.reason == "wrong_turn_count" and "exactly 2 pairs, got 1" in refused.value.detail
    finally:
        unregister("two_pairs")


GROUNDED = ("counting", "spatial", "absent_objects", "referring")


def test_grounded_tasks_take_the_pairs_schema_and_their_answers_are_still_checked(generate_mock, tmp_path):
    """A grounded task's reply is Question/Answer pairs too: the list-of-pairs schema, any number (the planned count is
    checked against the plan, as in a text run); the mock's JSON answers make the text run's records."""
    for task in GROUNDED:
        assert reply_schema(task_spec(task)) == reply_schema(CONVERSATION)
    tasks = ",".join(GROUNDED)
    generate_mock(tmp_path / "text", "--limit", "4", "--tasks", tasks)
    generate_mock(tmp_path / "json", "--limit", "4", "--tasks", tasks, "--structured")
    written = 0
    for task in GROUNDED:
        text = [json.loads(line)["conversations"] for line in (tmp_path / "text" / f"{task}.jsonl").read_text().splitlines()]
        structured = [json.loads(line)["conversations"] for line in (tmp_path / "json" / f"{task}.jsonl").read_text().splitlines()]
        assert structured == text
        written += len(text)
    assert written > 0
    manifest = json.loads((tmp_path / "json" / "manifest.json").read_text())
    assert manifest["structured_reasks"] == {}
    assert manifest["counts"] == json.loads((tmp_path / "text" / "manifest.json").read_text())["counts"]


def test_structured_with_the_anthropic_teacher_is_refused_in_one_line(generate_mock, tmp_path):
    result = generate_mock(tmp_path / "out", "--structured", "--teacher", "anthropic", "--model", "claude", expect=2)
    assert "--structured" in result.output and "anthropic" in result.output and "Traceback" not in result.output
