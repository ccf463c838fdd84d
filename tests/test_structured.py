"""Structured output by constrained decoding (npqwen/structured.py): sampled replies of the demo model
parse and validate against the schema (lengths, ranges, enums, item counts), a reply cut by
max_tokens is a valid beginning of an object, through the CLI and the server's response_format."""

import json
import os

import pytest

from cli_inprocess import load_model_once, run_cli
from conftest import CHECKPOINTS

pytest.importorskip("llguidance", reason="structured output needs the [structured] extra (llguidance)")

DEMO = os.path.join(CHECKPOINTS, "demo")
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["answer", "n", "tags", "mood"],
          "properties": {"answer": {"type": "string", "maxLength": 12},
                         "n": {"type": "integer", "minimum": 1, "maximum": 9},
                         "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3},
                         "mood": {"enum": ["calm", "restless"]}}}


def valid(doc):
    """The checks SCHEMA makes, written out (no validator library is a dependency)."""
    assert isinstance(doc, dict) and set(doc) == {"answer", "n", "tags", "mood"}
    assert isinstance(doc["answer"], str) and len(doc["answer"]) <= 12
    assert isinstance(doc["n"], int) and 1 <= doc["n"] <= 9
    assert isinstance(doc["tags"], list) and len(doc["tags"]) <= 3
    assert all(isinstance(t, str) and len(t) <= 5 for t in doc["tags"])
    assert doc["mood"] in ("calm", "restless")


def completes(prefix):
    """Is `prefix` the beginning of a JSON object? Closed by hand (compact JSON: no whitespace outside
    strings) and parsed."""
    stack, in_string, escaped = [], False, False
    for ch in prefix:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and (not stack or stack.pop() != ch):
            return False
    text = prefix + (('n"' if escaped else '"') if in_string else "")
    for tail in ("", "0", "e0", "rue", "ue", "e", "alse", "lse", "se", "ull", "ll", "l"):   # a number or literal cut
        for fix in ("", ":null", "null"):
            candidate = text + tail + fix
            if candidate.endswith(",") and candidate[-2:-1] not in ("{", "[", ",", ":"):   # (after a value only)
                candidate = candidate[:-1]
            try:
                json.loads(candidate + "".join(reversed(stack)))
                return True
            except ValueError:
                continue
    return False


def test_completes_is_a_real_check():
    assert completes('{"a":[1,"x') and completes('{"a":tr') and completes('{"a') and completes("{")
    assert completes('{"a":"x\\') and completes('{"a":-')
    assert not completes('{"a"::') and not completes('{"a":}') and not completes("{,") and not completes('{"a":1]')


@pytest.mark.parametrize("seed", range(6))
def test_cli_json_schema_replies_validate(tmp_path, seed):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    status, out, err = run_cli(["--model", DEMO, "--temperature", "1", "--seed", str(seed), "--json-schema", str(path),
                                "--max-new-tokens", "200", "学习如逆水行舟,不进则"])
    assert status == 0, err
    valid(json.loads(out))
    assert "end of sequence" in err


@pytest.mark.parametrize("seed", range(4))
def test_cli_json_object_cut_short_is_a_valid_beginning(seed):
    status, out, err = run_cli(["--model", DEMO, "--temperature", "1", "--seed", str(seed), "--json-object",
                                "--max-new-tokens", "12", "hello"])
    assert status == 0, err
    assert out.startswith("{") and completes(out), out


def test_cli_refuses_a_schema_it_cannot_compile(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=x)y"}}}))
    status, out, err = run_cli(["--model", DEMO, "--json-schema", str(path), "hi"])
    assert status == 2 and err.startswith("error: --json-schema") and "cannot be compiled" in err and not out
    status, out, err = run_cli(["--model", DEMO, "--json-schema", str(path), "--json-object", "hi"])
    assert status == 2 and "not both" in err


def test_server_response_format(tmp_path):
    openai = pytest.importorskip("openai")
    from serve_inprocess import running_server
    with running_server(load_model_once(DEMO), DEMO) as (url, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        for seed in range(3):
            r = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}], seed=seed,
                                               temperature=1, max_tokens=200, response_format={
                                                   "type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}})
            valid(json.loads(r.choices[0].message.content))
            assert r.choices[0].finish_reason == "stop"
        reasons = []
        for seed in range(6):
            r = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}], seed=seed,
                                               temperature=1, max_tokens=10, response_format={"type": "json_object"})
            text, reason = r.choices[0].message.content, r.choices[0].finish_reason
            reasons.append(reason)
            assert completes(text) if reason == "length" else isinstance(json.loads(text), dict), text
        assert "length" in reasons
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}], response_format={
                "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {
                    "a": {"type": "string", "pattern": "(?<=x)y"}}}}})
        assert e.value.param == "response_format.json_schema.schema" and "compiled" in e.value.body["message"]
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}], response_format={
                "type": "json_schema", "json_schema": {"name": "x", "schema": {"description": "x" * 70000}}})
        assert e.value.param == "response_format.json_schema.schema" and "bytes" in e.value.body["message"]
