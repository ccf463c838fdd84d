"""The genuine Qwen2 / Qwen2.5 tokenizers (read from ../shared/assets/qwen2): encoding, chat
templates against ids exported once from transformers' apply_chat_template, streaming decoding."""

import json
import os

import pytest

from conftest import REFERENCES, shared_asset
from npqwen.errors import NpqwenError
from npqwen.tokenizer import CHATML, Tokenizer

SEED_PROMPT = "学习如逆水行舟,不进则"
SEED_IDS = [100134, 29524, 100531, 52510, 22243, 102748, 11, 16530, 41299, 46448]


def qwen(version):
    folder = shared_asset() if version == "qwen2" else shared_asset("qwen2.5")
    return Tokenizer(folder)


@pytest.mark.parametrize("version", ["qwen2", "qwen2.5"])
def test_seed_prompt_encodes_to_the_seed_ids(version):
    tok = qwen(version)
    assert tok.encode(SEED_PROMPT) == SEED_IDS
    assert tok.decode(SEED_IDS) == SEED_PROMPT


with open(os.path.join(REFERENCES, "chat_templates.json"), encoding="utf-8") as f:
    CHAT = json.load(f)["cases"]


@pytest.mark.parametrize("case", CHAT, ids=lambda c: f"{c['tokenizer']}-{c['conversation']}")
def test_chat_template_ids_equal_transformers(case):
    tok = qwen(case["tokenizer"])
    text = tok.apply_chat_template(case["messages"], tools=case.get("tools"), add_generation_prompt=True)
    assert text == case["text"]
    assert tok.encode_chat(case["messages"], tools=case.get("tools")) == case["ids"]


def test_streaming_decode_prints_exactly_the_one_shot_text():
    tok = qwen("qwen2.5")
    text = ("学习如逆水行舟,不进则退。 Learning is like rowing upstream 🚣‍♀️: not to advance is to drop back. "
            "表情符号 😀😃😄🤖👨‍👩‍👧‍👦 mixed with ASCII, numbers 12345 and 中文标点，；！\n第二行 — em dash, café, naïve.") * 3
    ids = tok.encode(text)
    stream = tok.stream(skip_special_tokens=False)
    pieces = [stream.feed(i) for i in ids]
    assert "".join(pieces) == tok.decode(ids) == text
    # Byte-level tokens that split a character yield nothing until the character is complete.
    assert all("\ufffd" not in p for p in pieces)
    assert any(p == "" for p in pieces)


def test_special_token_text_is_the_special_token():
    """As transformers' Qwen2 tokenizer (split_special_tokens=False): typed '<|im_end|>' is id 151645."""
    tok = qwen("qwen2")
    assert tok.encode("hi<|im_end|>") == tok.encode("hi") + [151645]


def test_chatml_fallback_and_template_errors(tmp_path):
    src = shared_asset()
    (tmp_path / "tokenizer.json").symlink_to(os.path.join(src, "tokenizer.json"))
    tok = Tokenizer(str(tmp_path))  # no tokenizer_config.json: Qwen's ChatML
    assert tok.chat_template == CHATML
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]) == \
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": "{{ raise_exception('no system role here') }}"}))
    with pytest.raises(NpqwenError, match="no system role here"):
        Tokenizer(str(tmp_path)).apply_chat_template([{"role": "user", "content": "hi"}])
    # The sandbox refuses Python internals.
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": "{{ messages.__class__.__mro__[1].__subclasses__() }}"}))
    with pytest.raises(NpqwenError, match="chat template"):
        Tokenizer(str(tmp_path)).apply_chat_template([{"role": "user", "content": "hi"}])


def test_missing_or_broken_tokenizer(tmp_path):
    with pytest.raises(NpqwenError, match="no tokenizer.json"):
        Tokenizer(str(tmp_path))
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(NpqwenError, match="tokenizer.json"):
        Tokenizer(str(tmp_path))
