"""Qwen3 reasons before it answers, inside <think> ... </think>: --think / --no-think switch that on
and off through the chat template (enable_thinking, as transformers passes it), and --hide-thinking
prints only the answer. Run with the genuine Qwen3 tokenizer and template, and a scripted model
(no Qwen3 weights are at hand) that generates a chosen continuation."""

import json
import os
import shutil

import pytest

import cli_inprocess
from cli_inprocess import run_cli
from conftest import CHECKPOINTS, shared_asset
from npqwen.generation import generate
from npqwen.tokenizer import HideThinking, Tokenizer
from test_streaming import ScriptedModel

REPLY = "<think>\nThe user greets me. 我应该友好地回答。\n</think>\n\nHello! 你好 😀"


@pytest.fixture(scope="module")
def qwen3():
    return Tokenizer(os.path.dirname(shared_asset("qwen3", "tokenizer.json")))


def test_hiding_leaves_the_answer_and_showing_leaves_everything(qwen3):
    script = qwen3.encode(REPLY) + [qwen3.token_id("<|im_end|>")]
    model = ScriptedModel(151936, script, 4096)
    tokens = list(generate(model, qwen3, [1, 2, 3], 100, eos_ids=[script[-1]]))
    hide = HideThinking(qwen3)
    assert "".join(hide(t) for t in tokens) == "Hello! 你好 😀"
    assert "".join(t.text for t in tokens) == REPLY


def test_no_reasoning_block_is_shown_whole(qwen3):
    script = qwen3.encode("Just an answer.\n\nTwo lines.")
    tokens = list(generate(ScriptedModel(151936, script, 4096), qwen3, [1], len(script), eos_ids=[]))
    hide = HideThinking(qwen3)
    assert "".join(hide(t) for t in tokens) == "Just an answer.\n\nTwo lines."


def test_a_tokenizer_without_think_tokens_cannot_hide():
    with pytest.raises(Exception, match="<think>"):
        HideThinking(Tokenizer(os.path.join(CHECKPOINTS, "demo")))


@pytest.fixture
def qwen3_folder(tmp_path, qwen3, monkeypatch):
    """A checkpoint folder with the genuine Qwen3 tokenizer files and a Qwen3 config; the weights are
    the scripted model's."""
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(shared_asset("qwen3", name), tmp_path / name)
    config = {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "vocab_size": 151936,
              "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1,
              "head_dim": 8, "max_position_embeddings": 4096, "eos_token_id": 151645}
    (tmp_path / "config.json").write_text(json.dumps(config))
    prompts = []

    def scripted(path, weights="auto"):
        model = ScriptedModel(151936, qwen3.encode(REPLY) + [151645], 4096)
        model.weights_mode, model.weights_reason = "scripted", "a test"
        forward = model.forward

        def recording(input_ids, *a, **kw):
            if not prompts or len(prompts[-1]) == 0:
                prompts.append([int(i) for i in input_ids[0]])
            return forward(input_ids, *a, **kw)
        model.forward = recording
        return model
    monkeypatch.setattr(cli_inprocess, "load_model", scripted)  # what run_cli's load_model_once loads
    return str(tmp_path), prompts


def test_cli_no_think_hide_thinking(qwen3_folder, qwen3):
    folder, prompts = qwen3_folder
    status, out, err = run_cli(["--model", folder, "--chat", "--no-think", "--hide-thinking", "Hi"])
    assert status == 0, err
    assert out == "Hello! 你好 😀"
    # --no-think rendered the template with enable_thinking=False: an empty reasoning block follows
    want = qwen3.encode_chat([{"role": "user", "content": "Hi"}], enable_thinking=False)
    assert prompts[0] == want and qwen3.decode(want).endswith("<think>\n\n</think>\n\n")


def test_cli_think_shows_the_reasoning(qwen3_folder, qwen3):
    folder, prompts = qwen3_folder
    status, out, err = run_cli(["--model", folder, "--chat", "--think", "Hi"])
    assert status == 0, err
    assert out == REPLY
    assert prompts[0] == qwen3.encode_chat([{"role": "user", "content": "Hi"}], enable_thinking=True)


@pytest.mark.parametrize("args,message", [
    (["--think", "Hi"], "--think needs --chat"),
    (["--no-think", "Hi"], "--no-think needs --chat"),
    (["--chat", "--think", "--no-think", "Hi"], "not allowed with"),
    (["--chat", "--no-think", "Hi"], "no enable_thinking switch"),   # the demo's template has none
    (["--hide-thinking", "Hi"], "no <think> and </think> tokens"),
])
def test_cli_thinking_options_refused(args, message):
    status, out, err = run_cli(args)
    assert status == 2 and out == "" and message in err and err.startswith("error:"), err
