"""Nothing lost at the end of a stream. Whatever stopped generation (an eos id, max_new_tokens, the
context limit), the text streamed, joined, is tokenizer.decode(new ids, skip_special_tokens=True),
even when the last ids are the first bytes of an incomplete character (then rendered as decode
renders them, U+FFFD). Property-tested over random ids on the demo tokenizer and on the genuine
Qwen2 and Qwen2.5 tokenizers, whose byte-level pieces of CJK and emoji make incomplete characters
common; then through generate, generate_batch, and the command line's one-shot and chat turns."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from cli_inprocess import load_model_once, run_cli
from conftest import CHECKPOINTS, SHARED
from npqwen.config import Qwen2Config
from npqwen.generation import generate, generate_batch
from npqwen.model import ModelOutput
from npqwen.sampling import SamplingSettings
from npqwen.tokenizer import Tokenizer

DEMO = os.path.join(CHECKPOINTS, "demo")
FOLDERS = {"demo": DEMO, "qwen2": SHARED, "qwen2.5": os.path.join(SHARED, "qwen2.5")}
_tokenizers = {}


def tokenizer(name):
    """(Tokenizer, ids of byte-level pieces that are not whole characters, ids of added tokens)."""
    if not os.path.isfile(os.path.join(FOLDERS[name], "tokenizer.json")):
        pytest.skip(f"{FOLDERS[name]} is not beside this checkout")
    if name not in _tokenizers:
        tok = Tokenizer(FOLDERS[name])
        one_by_one = tok.tok.decode_batch([[i] for i in range(tok.max_id + 1)], skip_special_tokens=False)
        partial = [i for i, text in enumerate(one_by_one) if "\ufffd" in text]
        added = sorted(tok.tok.get_added_tokens_decoder())
        _tokenizers[name] = tok, partial, added
    return _tokenizers[name]


def id_lists(name, min_size=1, max_size=16):
    """Random ids, most of them pieces of characters, some special and added tokens."""
    tok, partial, added = tokenizer(name)
    one = st.one_of(st.sampled_from(partial), st.sampled_from(partial), st.sampled_from(added),
                    st.integers(0, tok.max_id))
    return st.lists(one, min_size=min_size, max_size=max_size)


def streamed(tok, ids):
    stream = tok.stream()
    return "".join(stream.feed(i) for i in ids), stream.flush()


# ---------------------------------------------------------------------------------------------
# the stream itself

@pytest.mark.parametrize("name", list(FOLDERS))
def test_stream_plus_flush_is_decode(name):
    tok, _, _ = tokenizer(name)

    @settings(max_examples=150, deadline=None)
    @given(id_lists(name))
    def check(ids):
        fed, held = streamed(tok, ids)
        assert fed + held == tok.decode(ids, skip_special_tokens=True)
    check()


def test_flush_renders_an_incomplete_character_as_decode_does():
    tok, _, _ = tokenizer("qwen2.5")
    ids = tok.encode("划船🪐")
    assert len(tok.encode("🪐")) > 1                   # an emoji in several byte-level pieces
    fed, held = streamed(tok, ids[:-1])                 # the stream ends inside it
    assert fed == "划船" and held and set(held) == {"\ufffd"}
    assert fed + held == tok.decode(ids[:-1])
    stream = tok.stream()                               # flush starts the stream afresh
    stream.feed(ids[0]), stream.flush()
    assert "".join(stream.feed(i) for i in ids[1:]) + stream.flush() == tok.decode(ids[1:])


# ---------------------------------------------------------------------------------------------
# generate, over ids chosen by the test

class ScriptedModel:
    """The model's interface (config, forward) around a fixed continuation: each forward's last
    logits are one-hot on the next id of the script, so greedy generation yields exactly the
    script. It drives the real generation loop over chosen ids with the genuine Qwen tokenizers,
    for which no weights are at hand."""

    def __init__(self, vocab_size, script, context):
        self.config = Qwen2Config.from_dict({
            "model_type": "qwen2", "vocab_size": vocab_size, "hidden_size": 8, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 1, "max_position_embeddings": context})
        self.script = iter(script)

    def forward(self, input_ids, attention_mask=None, cache=None, logits_to_keep=0):
        logits = np.zeros((len(input_ids), 1, self.config.vocab_size), np.float32)
        logits[:, -1, next(self.script)] = 1.0
        return ModelOutput(logits=logits)


@pytest.mark.parametrize("name", list(FOLDERS))
def test_generate_streams_all_of_decode_whatever_stops_it(name):
    tok, _, _ = tokenizer(name)

    @settings(max_examples=60, deadline=None)
    @given(id_lists(name), st.sampled_from(["eos", "length", "context"]))
    def check(script, stop):
        prompt = [1, 2, 3]
        if stop == "eos":   # the script ends at the first occurrence of its last id, the eos id
            script = script[:script.index(script[-1]) + 1]
        eos = [script[-1]] if stop == "eos" else []
        max_new = len(script) if stop == "length" else 10**30       # (a huge max: nothing is sized by it)
        context = len(prompt) + len(script) if stop == "context" else 4096
        model = ScriptedModel(tok.max_id + 1, script, context)
        tokens = list(generate(model, tok, prompt, max_new, eos_ids=eos))
        assert [t.id for t in tokens] == script
        assert tokens[-1].finish_reason == stop and all(t.finish_reason is None for t in tokens[:-1])
        assert "".join(t.text for t in tokens) == tok.decode(script, skip_special_tokens=True)
    check()


# ---------------------------------------------------------------------------------------------
# the demo model, sampling

demo_settings = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@demo_settings
@given(st.integers(0, 2**32), st.floats(0.5, 4.0), st.integers(1, 12), st.lists(st.integers(0, 4002), min_size=1,
                                                                                  max_size=8))
@example(seed=4, temperature=3.0, max_new=4, prompt=[5, 6, 7])   # ends in the first byte of a character
def test_demo_model_generate_streams_all_of_decode(seed, temperature, max_new, prompt):
    model, (tok, _, _) = load_model_once(DEMO), tokenizer("demo")
    tokens = list(generate(model, tok, prompt, max_new, SamplingSettings(temperature=temperature), seed=seed))
    assert tokens[-1].finish_reason in ("eos", "length")
    assert "".join(t.text for t in tokens) == tok.decode([t.id for t in tokens], skip_special_tokens=True)


@demo_settings
@given(st.integers(0, 2**32), st.integers(1, 10),
       st.lists(st.lists(st.integers(0, 4002), min_size=1, max_size=8), min_size=1, max_size=4))
def test_demo_model_generate_batch_rows_stream_to_decode(seed, max_new, prompts):
    model, (tok, _, _) = load_model_once(DEMO), tokenizer("demo")
    rows = generate_batch(model, prompts, max_new, SamplingSettings(temperature=2.0), seed=seed)
    for row in rows:
        fed, held = streamed(tok, row)
        assert fed + held == tok.decode(row, skip_special_tokens=True)


# ---------------------------------------------------------------------------------------------
# the command line: one-shot and every turn of the interactive chat

TEXT = st.text(st.sampled_from("学习如逆水行舟不进则退 river once upon a time,。🚣😀👨‍👩‍👧"), min_size=1, max_size=12)


def api_text(prompt, max_new, seed):
    """What the Python API generates, decoded in one go, with the command line's settings for
    `--temperature 3` on the demo (sampling with transformers' top-k 50; the demo's eos ids)."""
    tok = tokenizer("demo")[0]
    s = SamplingSettings(temperature=3.0, top_k=50)
    ids = [t.id for t in generate(load_model_once(DEMO), tok, prompt, max_new, s, seed, [4002, 4000])]
    return tok.decode(ids, skip_special_tokens=True)


@demo_settings
@given(st.integers(0, 2**32), st.integers(1, 6), TEXT.filter(str.strip))
@example(seed=0, max_new=1, prompt="🚣")
def test_cli_one_shot_prints_all_of_decode(seed, max_new, prompt):
    status, out, err = run_cli(["--temperature", "3", "--seed", str(seed), "--max-new-tokens", str(max_new), prompt])
    assert status == 0, err
    assert out == api_text(prompt, max_new, seed)


@demo_settings
@given(st.integers(0, 2**32), st.integers(1, 6), st.lists(TEXT.filter(str.strip), min_size=1, max_size=3))
def test_cli_chat_prints_every_turn_whole(seed, max_new, turns):
    stdin = "".join(t + "\n" for t in turns).encode() + b"\n"
    status, out, err = run_cli(["--chat", "--temperature", "3", "--seed", str(seed), "--max-new-tokens", str(max_new)],
                               stdin=stdin)
    assert status == 0, err
    messages, want = [], ""
    for turn in turns:
        messages.append({"role": "user", "content": turn})
        reply = api_text(tokenizer("demo")[0].encode_chat(messages), max_new, seed)
        want += reply + "\n"
        messages.append({"role": "assistant", "content": reply})
    assert out == want
    assert err.count("stopped at") == len(turns)
