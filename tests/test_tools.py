"""What agents need from the server: tool calls and the reasoning kept apart from the answer
(npqwen/replies.py), through the official `openai` client against a live server, with the genuine
Qwen3 tokenizer and template and a scripted model that says a chosen reply (no Qwen3 weights are at
hand): the reply's fields, streamed and not, and the tools and their history rendered as transformers
renders them."""

import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import REFERENCES, shared_asset
from npqwen.model import ModelOutput
from npqwen.openai_api import _messages
from npqwen.replies import ReplySplitter, join, reasoning_open, tool_format, typed
from npqwen.tokenizer import Tokenizer
from test_streaming import ScriptedModel

openai = pytest.importorskip("openai", reason="the server's tests need the test extra (pip install -e '.[test]')")

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                            "metric": {"type": "boolean"}, "where": {"type": "object"}},
           "required": ["city"]}
TOOLS = {"get_weather": WEATHER, "get_time": {"type": "object", "properties": {"zone": {"type": "string"}}}}
XML_TEMPLATE = "... <tool_call>\\n<function=example_function_name>\\n<parameter=example_parameter_1>\\nvalue_1 ..."


def split(text, pieces=None, **kw):
    """The reply's fields, fed whole or in the given pieces."""
    s = ReplySplitter(**kw)
    deltas = []
    for p in (pieces or [text]):
        deltas += s.feed(p)
    return join(deltas + s.finish(), "stop")


def no_ids(message):
    for c in message.get("tool_calls", []):
        assert c.pop("id").startswith("call_")
    return message


# ---------------------------------------------------------------------------------------------
# the splitting


def test_reasoning_then_answer():
    m, reason = split("<think>\nLet me see.\n</think>\n\nParis.", reasoning=True)
    assert m == {"role": "assistant", "content": "\n\nParis.", "reasoning_content": "\nLet me see.\n",
                 "reasoning": "\nLet me see.\n"} and reason == "stop"


def test_reasoning_opened_by_the_prompt():
    """Qwen3.5's template (and Qwen3's with thinking on, for some versions) opens <think> itself."""
    assert reasoning_open("<|im_start|>assistant\n<think>\n") and not reasoning_open("<think>\n\n</think>\n\n")
    m, _ = split("I think.\n</think>\n\nYes.", reasoning=True, open_=True)
    assert m["reasoning_content"] == "I think.\n" and m["content"] == "\n\nYes."
    m, _ = split("Still thinking when cut", reasoning=True, open_=True)       # no </think>: all reasoning
    assert m["reasoning_content"] == "Still thinking when cut" and m["content"] == ""


def test_no_think_block_is_all_content():
    m, _ = split("Just an answer.", reasoning=True)
    assert m == {"role": "assistant", "content": "Just an answer."}
    m, _ = split("<think>x</think>y", reasoning=False)                           # a model with no <think> token
    assert m["content"] == "<think>x</think>y"


def test_hermes_calls_in_order_and_content_null():
    text = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>')
    m, reason = split(text, tools=TOOLS, fmt="hermes")
    assert reason == "tool_calls" and no_ids(m) == {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": 2}'}},
        {"type": "function", "function": {"name": "get_time", "arguments": '{"zone": "CET"}'}}]}


def test_malformed_or_unknown_calls_stay_text():
    bad = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>'      # a brace short
    unknown = '<tool_call>\n{"name": "launch", "arguments": {}}\n</tool_call>'
    good = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    m, reason = split("Sure. " + bad + unknown + good, tools=TOOLS, fmt="hermes")
    assert m["content"] == "Sure. " + bad + unknown and len(m["tool_calls"]) == 1 and reason == "tool_calls"
    m, reason = split("A call cut short: <tool_call>\n{\"name\": ", tools=TOOLS, fmt="hermes")
    assert m == {"role": "assistant", "content": "A call cut short: <tool_call>\n{\"name\": "} and reason == "stop"
    m, _ = split(good, tools=None, fmt="hermes")                                     # tool_choice "none"
    assert m == {"role": "assistant", "content": good}


def test_xml_calls_typed_by_the_schema():
    assert tool_format(XML_TEMPLATE) == "xml"
    text = ("<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n<parameter=days>\n3\n"
            "</parameter>\n<parameter=metric>\nfalse\n</parameter>\n<parameter=where>\n{\"lat\": 1.5}\n</parameter>\n"
            "</function>\n</tool_call>")
    m, _ = split(text, tools=TOOLS, fmt="xml")
    assert json.loads(m["tool_calls"][0]["function"]["arguments"]) == {"city": "New York", "days": 3, "metric": False,
                                                                       "where": {"lat": 1.5}}
    assert m["tool_calls"][0]["function"]["arguments"].startswith('{"city": "New York", "days": 3')
    assert typed("\n two lines \n", "string") == "\n two lines \n" and typed("2.50", "number") == 2.5
    assert typed("7", ["integer", "null"]) == 7 and typed("null", "string") is None and typed("x", "integer") == "x"


def test_a_call_before_the_think_block_closes():
    text = ('<think>\nI need the weather.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
            '</tool_call>')
    m, reason = split(text, reasoning=True, tools=TOOLS, fmt="hermes")
    assert m["reasoning_content"] == "\nI need the weather.\n" and m["content"] is None and reason == "tool_calls"
    assert json.loads(m["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}


REPLIES = ["<think>\nHm.\n</think>\n\nParis.",
           '<think>a</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>\n\n',
           'Text <tool_call>\n{"name": "nope"}\n</tool_call> more <tool_call>\n{"name": "get_time", "arguments": {}}\n'
           '</tool_call> tail',
           "<thi not a tag </thin <tool_cal and <think>deep</think>"]


@pytest.mark.parametrize("text", REPLIES)
@given(cuts=st.lists(st.integers(0, 200), max_size=12))
def test_streamed_pieces_join_to_the_whole(text, cuts):
    pieces = [text[a:b] for a, b in zip([0] + sorted(cuts), sorted(cuts) + [len(text)])]
    whole, reason = split(text, reasoning=True, tools=TOOLS, fmt="hermes")
    streamed, reason2 = split(text, pieces, reasoning=True, tools=TOOLS, fmt="hermes")
    assert no_ids(streamed) == no_ids(whole) and reason2 == reason


# ---------------------------------------------------------------------------------------------
# the history, rendered as transformers renders it


def test_tool_history_from_the_wire_renders_as_transformers():
    """OpenAI's wire form (arguments as a JSON string, tool results with tool_call_id) -> the ids
    transformers' apply_chat_template gives for the same conversation (golden/references)."""
    with open(os.path.join(REFERENCES, "chat_templates.json"), encoding="utf-8") as f:
        case = next(c for c in json.load(f)["cases"] if c["tokenizer"] == "qwen3" and c["conversation"] == "tool_calling"
                    and c["enable_thinking"] is False)
    wire = []
    for m in case["messages"]:
        m = dict(m)
        if "tool_calls" in m:
            m["tool_calls"] = [{"id": "call_1", "type": "function",
                                "function": {"name": c["function"]["name"],
                                             "arguments": json.dumps(c["function"]["arguments"])}}
                               for c in m["tool_calls"]]
        if m["role"] == "tool":
            m["tool_call_id"] = "call_1"
        wire.append(m)
    tok = Tokenizer(os.path.dirname(shared_asset("qwen3", "tokenizer.json")))
    assert tool_format(tok.chat_template) == "hermes"
    assert tok.encode_chat(_messages(wire), tools=case["tools"], enable_thinking=False) == case["ids"]


# ---------------------------------------------------------------------------------------------
# through the server


CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n</tool_call>'
REPLY = "<think>\nThe user wants the weather.\n</think>\n\n" + CALL


# A chat template teaching the XML tool-call form (as Qwen3.5's and Qwen3-Coder's do), for the format's
# detection and its forced calls: its rendering is not transformers' golden data (no genuine Qwen3.5
# template is at hand), only ChatML with the tools listed.
XML_CHAT = ("{% if tools %}<|im_start|>system\nCall a function as <tool_call>\n<function=NAME>\n<parameter=P>\nVALUE"
            "\n</parameter>\n</function>\n</tool_call>\n{{ tools | tojson }}<|im_end|>\n{% endif %}"
            "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(params=["hermes"])
def qwen3_server(tmp_path, request):
    """A live server on the genuine Qwen3 tokenizer and template (or XML_CHAT: param "xml"), its model
    saying REPLY then <|im_end|>."""
    from serve_inprocess import running_server
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(shared_asset("qwen3", name), tmp_path / name)
    if request.param == "xml":
        (tmp_path / "chat_template.jinja").write_text(XML_CHAT)
    tok = Tokenizer(str(tmp_path))
    script = tok.encode(REPLY) + [151645]

    class Replay(ScriptedModel):
        prompts = []

        def forward(self, input_ids, attention_mask=None, cache=None, logits_to_keep=0, **kw):
            if len(input_ids[0]) > 1:      # a prefill: the next reply starts
                self.prompts.append([int(i) for i in input_ids[0]])
                self.script = iter(script)
            logits = np.zeros((len(input_ids), 1, self.config.vocab_size), np.float32)
            # past the script, it would end (<|im_end|>); elsewhere every token alike: a grammar's first choice wins
            logits[:, -1, next(self.script, 151645)] = 1.0
            return ModelOutput(logits=logits)
    model = Replay(151936, script, 40960)
    model.vision, model.config.eos_token_id = None, 151645
    with running_server(model, str(tmp_path), model_id="q", prompt_cache_mb=0) as (url, _):
        yield openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60), tok, Replay.prompts


TOOL_LIST = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
                                               "parameters": WEATHER}}]


def test_server_returns_tool_calls_and_reasoning(qwen3_server):
    client, tok, prompts = qwen3_server
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    r = client.chat.completions.create(model="q", messages=messages, tools=TOOL_LIST, max_tokens=200)
    assert prompts[-1] == tok.encode_chat(messages, tools=TOOL_LIST)          # the tools rendered as sent
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content is None
    assert c.message.model_extra["reasoning_content"] == "\nThe user wants the weather.\n"
    assert c.message.model_extra["reasoning"] == c.message.model_extra["reasoning_content"]
    [call] = c.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 2}

    # streamed: the deltas join to the same fields
    reasoning, content, calls, reasons = "", "", {}, []
    for ch in client.chat.completions.create(model="q", messages=messages, tools=TOOL_LIST, max_tokens=200,
                                             stream=True):
        d = ch.choices[0].delta
        reasoning += (d.model_extra or {}).get("reasoning_content") or ""
        content += d.content or ""
        for t in d.tool_calls or []:
            entry = calls.setdefault(t.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = t.id or entry["id"]
            entry["name"] += (t.function.name or "") if t.function else ""
            entry["arguments"] += (t.function.arguments or "") if t.function else ""
        reasons.append(ch.choices[0].finish_reason)
    assert reasoning == "\nThe user wants the weather.\n" and content == "" and reasons[-1] == "tool_calls"
    assert list(calls) == [0] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "days": 2}


def test_server_tool_choice_none_and_thinking_off(qwen3_server):
    client, tok, prompts = qwen3_server
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    r = client.chat.completions.create(model="q", messages=messages, tools=TOOL_LIST, tool_choice="none",
                                       max_tokens=200, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert prompts[-1] == tok.encode_chat(messages, tools=TOOL_LIST, enable_thinking=False)
    c = r.choices[0]
    # the prompt closed the think block: the reply's own <think> still opens one; the call stays text
    assert c.finish_reason == "stop" and c.message.tool_calls is None and c.message.content == "\n\n" + CALL
    r = client.chat.completions.create(model="q", messages=messages, reasoning_effort="none", max_tokens=200)
    assert prompts[-1] == tok.encode_chat(messages, enable_thinking=False)


def test_server_renders_a_tool_round_trip(qwen3_server):
    client, tok, prompts = qwen3_server
    history = [{"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_9", "type": "function", "function": {"name": "get_weather",
                                                                      "arguments": '{"city": "Paris"}'}}]},
               {"role": "tool", "tool_call_id": "call_9", "content": '{"temperature": 21}'}]
    client.chat.completions.create(model="q", messages=history, tools=TOOL_LIST, max_tokens=200)
    rendered = [history[0], {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": '{"temperature": 21}', "tool_call_id": "call_9"}]
    assert prompts[-1] == tok.encode_chat(rendered, tools=TOOL_LIST)


@pytest.mark.parametrize("tools, tool_choice, param, says", [
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}], None,
     "tools[0].function.parameters.type", "object"),
    ([{"type": "function", "function": {"name": "bad name!"}}], None, "tools[0].function.name", "letters"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"properties": []}}}], None,
     "tools[0].function.parameters.properties", "map"),
    (TOOL_LIST, {"type": "function", "function": {"name": "get_time"}}, "tool_choice.function.name", "no tool"),
    (None, "required", "tool_choice", "'tools' is empty"),
])
def test_bad_tools_get_400_naming_the_field(qwen3_server, tools, tool_choice, param, says):
    client = qwen3_server[0]
    kw = ({} if tool_choice is None else {"tool_choice": tool_choice}) | ({} if tools is None else {"tools": tools})
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="q", messages=[{"role": "user", "content": "hi"}], **kw)
    assert e.value.param == param and says in e.value.body["message"]


pytest.importorskip("llguidance", reason="forced tool calls need the [structured] extra (llguidance)")

FORCED = [{"type": "function", "function": {"name": "book", "parameters": {
    "type": "object", "required": ["city", "nights"], "additionalProperties": False,
    "properties": {"city": {"enum": ["Paris", "Oslo"]}, "nights": {"type": "integer", "minimum": 1, "maximum": 3}}}}},
    {"type": "function", "function": {"name": "cancel", "parameters": {
        "type": "object", "required": ["id"], "additionalProperties": False,
        "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 9}}}}}]


@pytest.mark.parametrize("qwen3_server", ["hermes", "xml"], indirect=True)
@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "cancel"}}])
def test_forced_tool_calls_are_valid_calls(qwen3_server, choice, request):
    """The scripted model wants to say REPLY (reasoning first); the grammar allows only calls, so the
    reply is calls of the tools (the named one), their arguments valid against its schema."""
    client = qwen3_server[0]
    r = client.chat.completions.create(model="q", messages=[{"role": "user", "content": "hi"}], tools=FORCED,
                                       tool_choice=choice, max_tokens=300)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content is None and c.message.tool_calls
    for call in c.message.tool_calls:
        args = json.loads(call.function.arguments)
        if call.function.name == "book":
            assert set(args) == {"city", "nights"} and args["city"] in ("Paris", "Oslo") and 1 <= args["nights"] <= 3
        else:
            assert call.function.name == "cancel" and set(args) == {"id"} and 0 <= args["id"] <= 9
    if isinstance(choice, dict):
        assert [t.function.name for t in c.message.tool_calls] == ["cancel"]
    assert tool_format(qwen3_server[1].chat_template) == request.node.callspec.params["qwen3_server"]
