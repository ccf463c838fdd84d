"""What evaluation harnesses ask of the server (lm-evaluation-harness's local-completions): several
prompts in one request, one choice each with its index, each what the prompt alone gets; and the
remote tokenizer's endpoints, /tokenizer_info, /tokenize and /detokenize, as vLLM serves them."""

import json
import os
import urllib.error
import urllib.request

import pytest

from cli_inprocess import load_model_once
from conftest import CHECKPOINTS
from npqwen.tokenizer import Tokenizer

pytest.importorskip("starlette", reason="the server's tests need the test extra")

DEMO = os.path.join(CHECKPOINTS, "demo")


@pytest.fixture(scope="module")
def server():
    from serve_inprocess import running_server
    with running_server(load_model_once(DEMO), DEMO) as (url, _):
        yield url


def call(url, path, body=None):
    req = urllib.request.Request(url + path, json.dumps(body).encode() if body is not None else None,
                                 {"Content-Type": "application/json"})
    try:
        return 200, json.loads(urllib.request.urlopen(req, timeout=120).read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_remote_tokenizer_endpoints(server):
    tok = Tokenizer(DEMO)
    status, info = call(server, "/tokenizer_info")
    assert status == 200 and info["eos_token"] == "<|im_end|>" and info["chat_template"] == tok.chat_template
    text = "学习如逆水行舟,不进则退。 Rowing upstream<|im_end|>"
    status, r = call(server, "/tokenize", {"prompt": text, "add_special_tokens": False})
    assert status == 200 and r["tokens"] == tok.encode(text) and r["count"] == len(r["tokens"])
    status, r = call(server, "/detokenize", {"tokens": tok.encode(text)})
    assert status == 200 and r["prompt"] == text
    messages = [{"role": "user", "content": "hi"}]
    status, r = call(server, "/tokenize", {"messages": messages})
    assert r["tokens"] == tok.encode_chat(messages)
    assert call(server, "/detokenize", {"tokens": [10 ** 9]})[0] == 400
    assert call(server, "/tokenize", {"prompt": "x", "truncate": 3})[1]["error"]["param"] == "truncate"


def test_several_prompts_answer_as_each_alone(server):
    """lm-eval's loglikelihood requests: id prompts, echo, logprobs 1, max_tokens 1; and its
    generation requests: text prompts with stop strings."""
    tok = Tokenizer(DEMO)
    prompts = [tok.encode("学习如逆水行舟"), tok.encode("不进则退。这句话"), tok.encode("The river")]
    body = {"model": "demo", "temperature": 0, "max_tokens": 1, "logprobs": 1, "echo": True, "seed": 1234}
    status, many = call(server, "/v1/completions", dict(body, prompt=prompts))
    assert status == 200 and [c["index"] for c in many["choices"]] == [0, 1, 2]
    for k, p in enumerate(prompts):
        alone = call(server, "/v1/completions", dict(body, prompt=p))[1]
        assert many["choices"][k]["text"] == alone["choices"][0]["text"]
        assert many["choices"][k]["logprobs"]["token_logprobs"] == alone["choices"][0]["logprobs"]["token_logprobs"]
    assert many["usage"]["prompt_tokens"] == sum(len(p) for p in prompts)
    texts = ["学习如逆水行舟", "The river"]
    gen = {"model": "demo", "temperature": 0, "max_tokens": 12, "stop": ["。"], "seed": 1234}
    status, many = call(server, "/v1/completions", dict(gen, prompt=texts))
    assert [c["text"] for c in many["choices"]] == [call(server, "/v1/completions", dict(gen, prompt=t))[1]
                                                    ["choices"][0]["text"] for t in texts]
    status, r = call(server, "/v1/completions", dict(gen, prompt=["fine", [10 ** 9]]))
    assert status == 400 and r["error"]["param"] == "prompt[1]"
    status, r = call(server, "/v1/completions", dict(gen, prompt=texts, stream=True))
    assert status == 400 and r["error"]["param"] == "prompt"


def test_several_prompts_through_the_official_client(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=120)
    texts = ["学习如逆水行舟", "The river", "不进则"]
    r = client.completions.create(model="demo", prompt=texts, max_tokens=6, temperature=0)
    assert [c.index for c in r.choices] == [0, 1, 2]
    for t, c in zip(texts, r.choices):
        assert c.text == client.completions.create(model="demo", prompt=t, max_tokens=6, temperature=0).choices[0].text
