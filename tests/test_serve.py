"""The OpenAI-compatible server, tested with the official `openai` client (max_retries=0: a crash
must not pass unseen behind a retry) against a live server on 127.0.0.1 with the demo model.
Greedy and seeded output through the server equals `python -m npqwen.generate` on the same prompt."""

import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

openai = pytest.importorskip("openai", reason="the server's tests need the test extra (pip install -e '.[test]')")
pytest.importorskip("uvicorn")

from cli_inprocess import load_model_once, run_cli  # noqa: E402
from near_ties import MARGIN, greedy_margin  # noqa: E402
from conftest import CHECKPOINTS, ROOT  # noqa: E402
from serve_inprocess import running_server  # noqa: E402

from npqwen import Tokenizer, generate  # noqa: E402
from npqwen.openai_api import CHAT_FIELDS, COMPLETION_FIELDS, ApiError  # noqa: E402
from npqwen.serve import is_loopback  # noqa: E402

DEMO = os.path.join(CHECKPOINTS, "demo")
NO_EOS = {"4000": -100, "4002": -100}     # logit_bias that keeps the demo model from ending (a long answer)


@pytest.fixture(scope="module")
def server():
    with running_server(load_model_once(DEMO), DEMO, max_batch=4) as (url, service):
        yield url, service


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=60)


def cli_text(*argv):
    status, out, err = run_cli(["--model", DEMO, *argv])
    assert status == 0, err
    return out


def post(url, path, raw: bytes, method="POST"):
    """A raw HTTP request (for bodies the openai client would never send). -> (status, JSON body)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request(method, path, body=raw, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, json.loads(body)


def streamed(stream):
    """-> (text joined, finish reasons, the chunks)."""
    chunks = list(stream)
    choice = [c.choices[0] for c in chunks if c.choices]
    text = "".join((getattr(c, "delta", None) and c.delta.content) or getattr(c, "text", "") or "" for c in choice)
    return text, [c.finish_reason for c in choice if c.finish_reason], chunks


# ---------------------------------------------------------------------------------------------
# the API, answered as npqwen.generate answers


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["demo"]
    assert client.models.retrieve("demo").id == "demo"
    status, body = post(server[0], "/health", b"", method="GET")
    assert (status, body) == (200, {"status": "ok"})


@pytest.mark.parametrize("prompt", ["Once upon a time", "学习如逆水行舟,不进则", "def add(a, b):"])
def test_completion_greedy_equals_generate(client, prompt):
    r = client.completions.create(model="demo", prompt=prompt, max_tokens=24, temperature=0)
    assert r.choices[0].text == cli_text("--temperature", "0", "--max-new-tokens", "24", prompt)
    ids = Tokenizer(DEMO).encode(prompt)
    assert r.usage.prompt_tokens == len(ids) and r.usage.total_tokens == len(ids) + r.usage.completion_tokens
    assert (r.choices[0].finish_reason == "length") == (r.usage.completion_tokens == 24)


def test_chat_greedy_equals_generate_chat(client):
    r = client.chat.completions.create(model="demo", temperature=0, max_tokens=40, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a river?"}])
    expected = cli_text("--chat", "--system", "Be brief.", "--temperature", "0", "--max-new-tokens", "40",
                        "What is a river?")
    assert r.choices[0].message.content == expected and expected
    assert r.choices[0].message.role == "assistant" and r.choices[0].finish_reason in ("stop", "length")
    # content as an array of text parts, and the developer role (OpenAI's newer name for system)
    again = client.chat.completions.create(model="demo", temperature=0, max_tokens=40, messages=[
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "What is a river?"}]}])
    assert again.choices[0].message.content == expected


def test_seeded_sampling_and_npqwen_fields_equal_generate(client):
    r = client.completions.create(model="demo", prompt="The river", max_tokens=20, temperature=0.9, top_p=0.9,
                                  seed=7, extra_body={"top_k": 40, "min_p": 0.05, "repetition_penalty": 1.3})
    assert r.choices[0].text == cli_text("--temperature", "0.9", "--top-p", "0.9", "--seed", "7", "--top-k", "40",
                                         "--min-p", "0.05", "--repetition-penalty", "1.3", "--max-new-tokens", "20",
                                         "The river")
    again = client.completions.create(model="demo", prompt="The river", max_tokens=20, temperature=0.9, top_p=0.9,
                                      seed=7, extra_body={"top_k": 40, "min_p": 0.05, "repetition_penalty": 1.3})
    assert again.choices[0].text == r.choices[0].text


@pytest.mark.parametrize("chat", [False, True])
def test_stream_joins_to_the_whole_text_even_ending_mid_character(client, chat):
    # 17 tokens of this continuation end inside a character: the text ends with what decode renders (U+FFFD)
    prompt, n = "学习如逆水行舟,不进则", 17
    kw = dict(model="demo", max_tokens=n, temperature=0)
    if chat:
        whole = client.chat.completions.create(messages=[{"role": "user", "content": prompt}], **kw)
        text = whole.choices[0].message.content
        stream = client.chat.completions.create(messages=[{"role": "user", "content": prompt}], stream=True,
                                                stream_options={"include_usage": True}, **kw)
    else:
        whole = client.completions.create(prompt=prompt, **kw)
        text = whole.choices[0].text
        assert text.endswith("\ufffd") and text == "".join(t.text for t in generate(
            load_model_once(DEMO), Tokenizer(DEMO), prompt, n))
        stream = client.completions.create(prompt=prompt, stream=True, stream_options={"include_usage": True}, **kw)
    joined, reasons, chunks = streamed(stream)
    assert joined == text and reasons == [whole.choices[0].finish_reason]
    # include_usage: every chunk carries usage null, the last one the usage and no choices
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_stop_strings(client):
    full = client.completions.create(model="demo", prompt="Once upon a time", max_tokens=40, temperature=0)
    text = full.choices[0].text
    assert "little bird" in text and "mountain" in text
    for stop in (["mountain"], ["little bird", "zzz"], "b"):   # " little", " b", "ir", "d": spans tokens
        first = min(text.find(s) for s in ([stop] if isinstance(stop, str) else stop) if s in text)
        r = client.completions.create(model="demo", prompt="Once upon a time", max_tokens=40, temperature=0,
                                      stop=stop)
        assert r.choices[0].text == text[:first] and r.choices[0].finish_reason == "stop"
        joined, reasons, _ = streamed(client.completions.create(model="demo", prompt="Once upon a time",
                                                                max_tokens=40, temperature=0, stop=stop, stream=True))
        assert joined == text[:first] and reasons == ["stop"]
    r = client.completions.create(model="demo", prompt="Once upon a time", max_tokens=40, temperature=0, stop="~~")
    assert r.choices[0].text == text and r.choices[0].finish_reason == full.choices[0].finish_reason


def test_what_real_clients_add_is_accepted(client):
    plain = client.chat.completions.create(model="demo", temperature=0, max_tokens=16,
                                           messages=[{"role": "user", "content": "Hello"}])
    busy = client.chat.completions.create(
        model="demo", temperature=0, max_tokens=16, messages=[{"role": "user", "content": "Hello"}],
        user="u-1", n=1, presence_penalty=0, frequency_penalty=0, logit_bias={}, response_format={"type": "text"},
        stream_options={"include_usage": True}, store=False, metadata={"k": "v"}, parallel_tool_calls=True,
        tool_choice="none", tools=[], service_tier="auto", logprobs=False, top_logprobs=None, verbosity="medium",
        prompt_cache_key="conversation-1", safety_identifier="s")
    assert busy.choices[0].message.content == plain.choices[0].message.content
    c = client.completions.create(model="demo", prompt="Once upon a time", max_tokens=8, temperature=0, echo=True,
                                  best_of=1, suffix="", user="u", n=1, stream_options={"include_usage": True})
    assert c.choices[0].text == "Once upon a time" + cli_text("--temperature", "0", "--max-new-tokens", "8",
                                                                "Once upon a time")


def test_logit_bias_is_honoured(client):
    ids = Tokenizer(DEMO).encode(" there")
    r = client.completions.create(model="demo", prompt="Once upon a time,", max_tokens=1, temperature=0,
                                  logit_bias={str(ids[0]): 100})
    assert r.choices[0].text == " there"
    banned = client.completions.create(model="demo", prompt="Once upon a time,", max_tokens=1, temperature=0,
                                       logit_bias={str(ids[0]): -100})
    assert banned.choices[0].text != " there"


def test_token_id_prompts(client):
    ids = Tokenizer(DEMO).encode("Once upon a time")
    by_ids = client.completions.create(model="demo", prompt=ids, max_tokens=12, temperature=0)
    by_text = client.completions.create(model="demo", prompt="Once upon a time", max_tokens=12, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text and by_ids.usage.prompt_tokens == len(ids)


def test_logprobs_are_generates(client):
    """Chat and completions logprobs, whole and streamed, are those of generate(logprobs=K): the
    log-probability under the distribution each token was drawn from, and the K most likely."""
    from npqwen import Tokenizer, generate
    from cli_inprocess import load_model_once
    from conftest import CHECKPOINTS
    folder = f"{CHECKPOINTS}/demo"
    tok, model = Tokenizer(folder), load_model_once(folder)
    want = list(generate(model, tok, "Once upon a time", 8, logprobs=3, eos_ids=[4002, 4000]))
    got = client.completions.create(model="demo", prompt="Once upon a time", max_tokens=8, temperature=0, logprobs=3)
    lp = got.choices[0].logprobs
    assert lp.tokens == [tok.decode([t.id]) for t in want]
    assert lp.token_logprobs == pytest.approx([t.logprob for t in want], abs=1e-5)
    assert [list(d.values()) for d in lp.top_logprobs] == [pytest.approx([v for _, v in t.top_logprobs], abs=1e-5)
                                                           for t in want]
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    chat_want = list(generate(model, tok, tok.encode_chat([{"role": "user", "content": "hi"}]), 6, logprobs=2,
                              eos_ids=[4002, 4000]))
    for stream in (False, True):
        kw = dict(model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=6, temperature=0,
                  logprobs=True, top_logprobs=2, stream=stream)
        if stream:
            content = [c for ch in client.chat.completions.create(**kw) if ch.choices and ch.choices[0].logprobs
                       for c in ch.choices[0].logprobs.content]
        else:
            content = client.chat.completions.create(**kw).choices[0].logprobs.content
        assert [c.logprob for c in content] == pytest.approx([t.logprob for t in chat_want], abs=1e-5)
        assert [[a.logprob for a in c.top_logprobs] for c in content] == [
            pytest.approx([v for _, v in t.top_logprobs], abs=1e-5) for t in chat_want]
        assert b"".join(bytes(c.bytes) for c in content).decode("utf-8", "replace") == \
            tok.decode([t.id for t in chat_want])


# ---------------------------------------------------------------------------------------------
# echo with logprobs: how evaluators (lm-evaluation-harness) score text


def lm_eval_request(url, ids, **changes):
    """The body lm-evaluation-harness 0.4's `local-completions` model sends to score a context and
    continuation (lm_eval/models/openai_completions.py, _create_payload for loglikelihood), sent raw
    as it sends it. -> the choice."""
    body = {"model": "demo", "prompt": [ids], "max_tokens": 1, "logprobs": 1, "seed": 1234, "echo": True,
            "temperature": 0, **changes}
    status, r = post(url, "/v1/completions", json.dumps(body).encode())
    assert status == 200, r
    return r["choices"][0], r["usage"]


def test_echo_with_logprobs_scores_the_prompt_as_transformers_does(server, scoring_ref):
    """n prompt tokens and one generated: n + 1 entries, the first null; the prompt's log-probabilities
    are transformers' (golden, scripts/export_score_golden.py) and npqwen.score's for the same ids;
    lm-eval's sum over the continuation and its is_greedy test read them as it reads OpenAI's."""
    from npqwen.logprobs import score_rows
    url = server[0]
    tok, model = Tokenizer(DEMO), load_model_once(DEMO)
    ids = scoring_ref["demo_short.ids"].tolist()
    n = len(ids)
    choice, usage = lm_eval_request(url, ids)
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"]) == n + 1
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None and lp["text_offset"][0] == 0
    prompt_lp = np.array(lp["token_logprobs"][1:n])
    assert np.abs(prompt_lp - scoring_ref["demo_short.logprobs"]).max() < 1e-4           # transformers
    mine = score_rows(model, np.array([ids]), top_k=1)[0]
    assert np.abs(prompt_lp - mine.logprobs).max() < 1e-5                               # python -m npqwen.score
    assert [list(d) for d in lp["top_logprobs"][1:n]] == [[tok.decode([i])] for i in mine.top_ids[:, 0]]
    # the generated token: greedy, under the model's softmax, with its own entry
    want = list(generate(model, tok, ids, 1, logprobs=1, eos_ids=[]))[0]
    assert lp["tokens"][n] == tok.decode([want.id]) and lp["token_logprobs"][n] == pytest.approx(want.logprob, abs=1e-5)
    # the text: the prompt, then the completion; each token's text starts at its offset
    assert choice["text"] == tok.decode(ids) + want.text and usage["prompt_tokens"] == n
    assert choice["text"][lp["text_offset"][n]:] == want.text
    assert all(choice["text"][a:b] == tok.decode([i]) for a, b, i in zip(lp["text_offset"], lp["text_offset"][1:], ids)
               if "\ufffd" not in tok.decode([i]))
    # as lm-eval reads it: a context of ctxlen tokens, the continuation after it
    ctxlen = 100
    assert sum(lp["token_logprobs"][ctxlen:-1]) == pytest.approx(float(mine.logprobs[ctxlen - 1:].sum()), abs=1e-3)
    greedy = [t == max(top.values()) for t, top in zip(lp["token_logprobs"][1:n], lp["top_logprobs"][1:n])]
    assert greedy == list(mine.ranks == 1) and any(greedy) and not all(greedy)   # exact float equality, as lm-eval tests it


def test_echo_keeps_an_end_of_sequence_token_and_scores_with_max_tokens_0(server, scoring_ref):
    url = server[0]
    tok = Tokenizer(DEMO)
    ids = scoring_ref["demo_short.ids"].tolist()[:40]
    whole, _ = lm_eval_request(url, ids)
    ends, _ = lm_eval_request(url, ids, logit_bias={"4000": 100})   # the generated token is <|endoftext|>
    assert ends["finish_reason"] == "stop" and len(ends["logprobs"]["tokens"]) == 41
    assert ends["logprobs"]["tokens"][-1] == tok.decode([4000]) and ends["logprobs"]["token_logprobs"][-1] <= 0
    assert ends["logprobs"]["token_logprobs"][:40] == whole["logprobs"]["token_logprobs"][:40]
    only, usage = lm_eval_request(url, ids, max_tokens=0)               # the prompt scored, nothing generated
    assert only["finish_reason"] == "length" and usage["completion_tokens"] == 0 and only["text"] == tok.decode(ids)
    assert only["logprobs"]["token_logprobs"] == whole["logprobs"]["token_logprobs"][:40]
    assert only["logprobs"]["text_offset"] == whole["logprobs"]["text_offset"][:40]
    long = ids * 13  # 520 tokens: past the demo's context of 512
    status, body = post(url, "/v1/completions", json.dumps({"prompt": long[:512], "echo": True, "logprobs": 0,
                                                            "max_tokens": 0}).encode())
    assert status == 200 and len(body["choices"][0]["logprobs"]["tokens"]) == 512    # a full context, scored
    status, body = post(url, "/v1/completions", json.dumps({"prompt": long, "echo": True, "logprobs": 0,
                                                            "max_tokens": 0}).encode())
    assert status == 400 and body["error"]["param"] == "prompt" and "context" in body["error"]["message"]


def test_echo_with_logprobs_streamed_equals_whole(client):
    kw = dict(model="demo", prompt="The river town", max_tokens=5, temperature=0, logprobs=2, echo=True)
    whole = client.completions.create(**kw).choices[0]
    chunks = [c.choices[0] for c in client.completions.create(stream=True, **kw) if c.choices]
    assert "".join(c.text for c in chunks) == whole.text
    got = [c.logprobs for c in chunks if c.logprobs]
    for field in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
        assert [x for g in got for x in getattr(g, field)] == getattr(whole.logprobs, field), field
    assert whole.logprobs.token_logprobs[0] is None and whole.logprobs.token_logprobs[1] < 0


# ---------------------------------------------------------------------------------------------
# errors: 400 with OpenAI's error object naming the field; never a 500, never a dead server


def bad(client, param, status=400, chat=True, **kw):
    kw = {"model": "demo", "max_tokens": 4, **kw}
    with pytest.raises(openai.APIStatusError) as e:
        if chat:
            client.chat.completions.create(**{"messages": [{"role": "user", "content": "hi"}], **kw})
        else:
            client.completions.create(**{"prompt": "hi", **kw})
    assert e.value.status_code == status and e.value.param == param, (e.value.status_code, e.value.body)
    assert e.value.type == "invalid_request_error" and e.value.body["message"]
    return e.value.body["message"]


def test_bad_requests_get_400_naming_the_field(client):
    assert "more than one choice" in bad(client, "n", n=2)
    assert bad(client, "response_format.type", response_format={"type": "xml"})
    assert bad(client, "response_format.json_schema", response_format={"type": "json_schema"})
    assert bad(client, "response_format.json_schema.schema",
               response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}})
    assert "needs 'logprobs': true" in bad(client, "top_logprobs", top_logprobs=3)
    assert bad(client, "top_logprobs", logprobs=True, top_logprobs=21)
    assert bad(client, "logprobs", chat=False, logprobs=6)
    assert "unknown field 'foo'" in bad(client, "foo", extra_body={"foo": 1})
    assert "only enable_thinking" in bad(client, "chat_template_kwargs.add_vision_id",
                                         extra_body={"chat_template_kwargs": {"add_vision_id": True}})
    assert "reasoning switch" in bad(client, "chat_template_kwargs.enable_thinking",   # the demo does not reason
                                     extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert "[0, 2]" in bad(client, "temperature", temperature=3)
    assert "(0, 1]" in bad(client, "top_p", top_p=0)
    assert "echo" in bad(client, "max_tokens", max_tokens=0)
    assert "names" in bad(client, "messages[1].name", messages=[{"role": "system", "content": "Be brief."},
                                                                {"role": "user", "content": "hi", "name": "ann"}])
    assert "reasoning" in bad(client, "reasoning_effort", reasoning_effort="high")   # the demo does not reason
    assert "echo" in bad(client, "max_tokens", chat=False, max_tokens=0)
    assert bad(client, "seed", seed=-1)
    assert bad(client, "presence_penalty", presence_penalty=0.5)
    assert "shows no tool calls" in bad(client, "tools", tools=[{"type": "function", "function": {"name": "f"}}])
    assert bad(client, "stop", stop=[""])
    assert bad(client, "stop", stop="x" * 257)
    assert bad(client, "stop", stop=[str(i) for i in range(17)])
    assert bad(client, "logit_bias", logit_bias={"99999": 1})
    assert "empty" in bad(client, "messages", messages=[])
    assert bad(client, "messages[0].role", messages=[{"role": "robot", "content": "hi"}])
    # images: a data: URL only (the server fetches nothing); the demo model reads text only
    image = lambda url, **kw: [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url, **kw}}]}]
    png = "data:image/png;base64," + base64.b64encode(open(os.path.join(ROOT, "golden", "vision", "images", "big.png"),
                                                          "rb").read()).decode()
    assert "fetches nothing" in bad(client, "messages[0].content[0].image_url.url", messages=image("http://x/y.png"))
    assert "base64" in bad(client, "messages[0].content[0].image_url.url", messages=image("data:image/png;base64,@@"))
    assert bad(client, "messages[0].content[0].image_url.detail", messages=image(png, detail="high"))
    assert "text only" in bad(client, "messages[0].content[0]", messages=image(png))
    assert "user messages" in bad(client, "messages[1].content", messages=[
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": image(png)[0]["content"]}])
    assert bad(client, "messages[0].content[0].type", messages=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}])
    assert bad(client, "messages[1].tool_call_id", messages=[{"role": "user", "content": "hi"},
                                                             {"role": "tool", "content": "x"}])
    assert bad(client, "messages[1].role", messages=[{"role": "user", "content": "hi"},
                                                     {"role": "function", "content": "x", "name": "f"}])
    assert "not JSON" in bad(client, "messages[1].tool_calls[0].function.arguments", messages=[
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function",
                                                               "function": {"name": "f", "arguments": "{oops"}}]}])
    long = " ".join(["word"] * 600)
    assert "context" in bad(client, "prompt", chat=False, prompt=long)
    assert "context" in bad(client, "messages", messages=[{"role": "user", "content": long}])
    assert bad(client, "prompt[1]", chat=False, prompt=["a", ""])       # several prompts: each named by its place
    assert bad(client, "prompt", chat=False, prompt=[1, 10**9])
    assert bad(client, "model", status=404, model="gpt-4o")


def test_malformed_bodies_get_400(server, client):
    url = server[0]
    for raw in (b"{bad", b"[1, 2]", b"", b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
                b"\xff\xfe", b'{"messages": ' + b"[" * 100000 + b"]" * 100000 + b"}"):
        status, body = post(url, "/v1/chat/completions", raw)
        assert status == 400 and body["error"]["type"] == "invalid_request_error" and body["error"]["message"], raw
    for path, raw in (("/v1/completions", b'{"prompt": "\\ud800 lone surrogate", "max_tokens": 2}'),
                      ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\\udfff"}]}'),
                      ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": 5}]}')):
        status, body = post(url, path, raw)
        assert status == 400 and body["error"]["param"] in ("prompt", "messages", "messages[0].content"), (raw, body)
    status, body = post(url, "/v1/nowhere", b"{}")
    assert status == 404 and "no such endpoint" in body["error"]["message"]
    status, body = post(url, "/v1/completions", b"", method="GET")
    assert status == 405 and body["error"]["message"]
    assert client.completions.create(model="demo", prompt="hi", max_tokens=2).choices[0].text is not None


def test_every_openai_field_is_known():
    """Every request field the official client defines is honoured, ignored or refused by name: none
    falls through to "unknown field"."""
    from openai.types import completion_create_params as completion
    from openai.types.chat import completion_create_params as chat
    for params, known in ((chat.CompletionCreateParamsBase, CHAT_FIELDS),
                          (completion.CompletionCreateParamsBase, COMPLETION_FIELDS)):
        fields = set(params.__annotations__) | {"stream"}
        assert fields <= set(known), fields - set(known)


# ---------------------------------------------------------------------------------------------
# many clients, one model


def test_client_disconnecting_mid_stream_stops_its_generation(server, client):
    """The engine is held after each step of the abandoned request's row once it has 3 tokens, until
    the server has seen the client go: how fast the two threads run cannot change the outcome."""
    url, service = server
    engine = service.engine
    before, after_step = engine.tokens_generated, engine.after_step

    def hold():   # (engine thread) hand on this step's events, then wait for the client's disconnect to be seen
        after_step()
        row = next((r for r in engine.rows if r.req.max_new_tokens == 480), None)
        deadline = time.monotonic() + 30
        while row is not None and row.generated >= 3 and not row.req.cancelled and time.monotonic() < deadline:
            time.sleep(0.001)

    engine.after_step = hold
    try:
        stream = client.completions.create(model="demo", prompt="Once upon a time", max_tokens=480, temperature=0,
                                           logit_bias=NO_EOS, stream=True)
        for _, piece in zip(range(3), stream):
            pass
        stream.close()                                             # the client goes away after 3 chunks
        other = client.completions.create(model="demo", prompt="The river", max_tokens=12, temperature=0)
    finally:
        engine.after_step = after_step
    assert other.choices[0].text == cli_text("--temperature", "0", "--max-new-tokens", "12", "The river")
    deadline = time.monotonic() + 30
    while engine.rows and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not engine.rows
    assert engine.tokens_generated - before <= 12 + 5, "the abandoned request went on after its client left"


def test_concurrent_clients_get_what_each_gets_alone(client):
    """A small load test (scripts/load_test.py is the large one): streamed and whole, chat and
    completion requests at once, with bad requests among them; each text equals the request alone."""
    requests = [("text", "Once upon a time", False), ("text", "The river", True), ("chat", "Hello", False),
                ("chat", "What is a river?", True), ("text", "学习如逆水行舟,不进则", True), ("text", "import os", False)]

    def run(kind, prompt, stream):
        kw = dict(model="demo", max_tokens=30, temperature=0, logit_bias=NO_EOS if len(prompt) < 10 else None)
        if kind == "chat":
            kw["messages"] = [{"role": "user", "content": prompt}]
            if stream:
                return streamed(client.chat.completions.create(stream=True, **kw))[0]
            return client.chat.completions.create(**kw).choices[0].message.content
        if stream:
            return streamed(client.completions.create(prompt=prompt, stream=True, **kw))[0]
        return client.completions.create(prompt=prompt, **kw).choices[0].text

    tok, model = Tokenizer(DEMO), load_model_once(DEMO)
    for kind, prompt, _ in requests:   # each request alone has no near tie, so batched it gives the same text
        ids = tok.encode_chat([{"role": "user", "content": prompt}]) if kind == "chat" else tok.encode(prompt)
        no_eos = len(prompt) < 10
        assert greedy_margin(model, tok, ids, 30, [] if no_eos else [4002, 4000],
                             never=(4000, 4002) if no_eos else ()) > MARGIN, prompt
    alone = [run(*r) for r in requests]
    jobs = requests * 3
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda r: run(*r), jobs))
        bad_ones = [pool.submit(bad, client, "n", n=3) for _ in range(4)]
        assert all(b.result() for b in bad_ones)
    assert together == alone * 3


def test_follow_up_turn_reuses_the_prompt_cache(client):
    tok = Tokenizer(DEMO)
    messages = [{"role": "user", "content": "Tell me about rivers."}]
    first = client.chat.completions.create(model="demo", temperature=0, max_tokens=20, messages=messages)
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "And mountains?"}]
    second = client.chat.completions.create(model="demo", temperature=0, max_tokens=20, messages=messages)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens <= cached < second.usage.prompt_tokens
    ids = tok.encode_chat(messages)
    fresh = "".join(t.text for t in generate(load_model_once(DEMO), tok, ids, 20))
    assert second.choices[0].message.content == fresh


# ---------------------------------------------------------------------------------------------
# the command


def test_serve_command_starts_answers_and_stops():
    p = subprocess.Popen([sys.executable, "-m", "npqwen.serve", "--port", "0", "--log-level", "warning"], cwd=ROOT,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()
        assert line.startswith("npqwen: serving ") and "http://127.0.0.1:" in line, line
        url = line.split(" at ")[1].split("/v1")[0]
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        r = c.completions.create(model=c.models.list().data[0].id, prompt="Once upon a time", max_tokens=10,
                                 temperature=0)
        assert r.choices[0].text == cli_text("--temperature", "0", "--max-new-tokens", "10", "Once upon a time")
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(30) == 0
        p.stderr.close()


@pytest.mark.parametrize("argv, message", [
    (["--port", "70000"], "--port must be from 0 to 65535"),
    (["--model", "/no/such/dir"], "no such folder"),
    (["--max-batch", "0"], "--max-batch must be at least 1"),
    (["--prompt-cache-mb", "nan"], "--prompt-cache-mb"),
    (["--host", "192.0.2.1"], "cannot listen on 192.0.2.1"),      # an address this machine does not have
    (["--prompt-lookup", "0"], "--prompt-lookup must be 1 to 64"),
    (["--draft-tokens", "65", "--draft-model", DEMO], "--draft-tokens must be 1 to 64"),
    (["--model", os.path.join(ROOT, "golden", "vision", "qwen3_5_vision"), "--prompt-lookup", "3"],
     "cannot be rewound"),                                            # a hybrid model's recurrent state
])
def test_serve_command_bad_options(argv, message):
    from npqwen.serve import main
    import io
    import contextlib
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(argv) == 2
    assert err.getvalue().startswith("error: ") and message in err.getvalue() and err.getvalue().count("\n") == 1


def test_port_in_use_is_one_error_line():
    from npqwen.serve import listen, main
    import io
    import contextlib
    taken = listen("127.0.0.1", 0)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["--port", str(taken.getsockname()[1])]) == 2
    taken.close()
    assert "cannot listen on 127.0.0.1" in err.getvalue() and err.getvalue().count("\n") == 1


def test_loopback_is_the_default_and_other_hosts_are_said():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")


def test_without_the_serve_extra_the_command_says_what_to_install(monkeypatch):
    from npqwen.serve import main
    import io
    import contextlib
    monkeypatch.setitem(sys.modules, "uvicorn", None)     # as if not installed: importing it fails
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main([]) == 2
    assert err.getvalue() == 'error: the server needs the serve extra: pip install -e ".[serve]"\n'


def test_reasoning_effort_switches_qwen3_thinking():
    from conftest import shared_asset
    from npqwen.openai_api import parse
    qwen3 = Tokenizer(os.path.dirname(shared_asset("qwen3", "tokenizer.json")))
    messages = [{"role": "user", "content": "2 + 2?"}]
    ctx = {"model_ids": ["q"], "vocab_size": 151936, "can_think": qwen3.can_think}
    off = parse({"messages": messages, "reasoning_effort": "none"}, True, ctx)
    on = parse({"messages": messages, "reasoning_effort": "high"}, True, ctx)
    assert (off.enable_thinking, on.enable_thinking) == (False, True)
    assert qwen3.apply_chat_template(off.messages, enable_thinking=off.enable_thinking).endswith(
        "<think>\n\n</think>\n\n")                                  # the template's empty reasoning block
    demo = {"model_ids": ["q"], "vocab_size": 4003, "can_think": False}
    assert parse({"messages": messages, "reasoning_effort": "none"}, True, demo).enable_thinking is None
    with pytest.raises(ApiError, match="no reasoning switch"):   # asking a model that does not reason to reason
        parse({"messages": messages, "reasoning_effort": "low"}, True, demo)


def test_names_are_kept_where_the_template_shows_them():
    """A message's `name` is refused only because the demo's template drops it: a template that shows
    it renders it, and the request is answered."""
    from npqwen.openai_api import ApiError, parse
    from npqwen.serve import Service
    tok = Tokenizer(DEMO)
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}{% if m.name %} ({{ m.name }}){% endif %}\n"
                         "{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n")
    from npqwen.generation_config import read_generation_config
    service = Service(load_model_once(DEMO), tok, "demo", read_generation_config(DEMO, 4003))
    try:
        g = parse({"messages": [{"role": "user", "content": "hi", "name": "ann"}]}, True, service.ctx)
        assert tok.decode(service._encode(g)).startswith("<|im_start|>user (ann)")
        service.tok = Tokenizer(DEMO)
        with pytest.raises(ApiError, match="does not show message names"):
            service._encode(g)
    finally:
        service.close()
