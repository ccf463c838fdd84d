"""The genuine Qwen2 / Qwen2.5 / Qwen3 tokenizers (read from ../shared/assets/qwen2): encoding, chat
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
    folder = shared_asset() if version == "qwen2" else shared_asset(version)
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
    think = {"enable_thinking": case["enable_thinking"]} if "enable_thinking" in case else {}
    text = tok.apply_chat_template(case["messages"], tools=case.get("tools"), add_generation_prompt=True, **think)
    assert text == case["text"]
    assert tok.encode_chat(case["messages"], tools=case.get("tools"), **think) == case["ids"]


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


# ---------------------------------------------------------------------------------------------
# tokenizer_config.json, field by field, and the tokenizer against the model

def demo_tokenizer_folder(tmp_path, config=None):
    from conftest import CHECKPOINTS
    (tmp_path / "tokenizer.json").symlink_to(os.path.join(CHECKPOINTS, "demo", "tokenizer.json"))
    if config is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return str(tmp_path)


@pytest.mark.parametrize("config,fragment", [
    ({"eos_token": 5}, "field 'eos_token' must be null, a token's text or {\"content\": text}, found 5"),
    ({"pad_token": {"content": ["<|endoftext|>"]}}, "field 'pad_token' must be null"),
    ({"bos_token": "<s>"}, "field 'bos_token' is '<s>', which is not a token of tokenizer.json"),
    ({"unk_token": {"content": "<unk>"}}, "field 'unk_token' is '<unk>'"),
    ({"chat_template": 5}, "field 'chat_template' must be a template (a string) or a list of"),
    ({"chat_template": [{"name": "default"}]}, "found [{'name': 'default'}]"),
    ({"chat_template": []}, "found []"),
])
def test_tokenizer_config_fields_are_checked(tmp_path, config, fragment):
    folder = demo_tokenizer_folder(tmp_path, config)
    with pytest.raises(NpqwenError) as e:
        Tokenizer(folder)
    assert str(e.value).startswith(os.path.join(folder, "tokenizer_config.json") + ": ") and fragment in str(e.value)


def test_tokenizer_config_good_forms(tmp_path):
    folder = demo_tokenizer_folder(tmp_path, {"eos_token": {"content": "<|im_end|>", "special": True},
                                              "pad_token": "<|endoftext|>", "bos_token": None,
                                              "chat_template": [{"name": "default", "template": "D{{ eos_token }}"},
                                                                {"name": "tool_use", "template": "T"}]})
    tok = Tokenizer(folder)
    assert tok.special_tokens == {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                                  "unk_token": None}
    assert tok.apply_chat_template([]) == "D<|im_end|>"


def test_named_templates_without_default_fail_only_for_chat(tmp_path):
    folder = demo_tokenizer_folder(tmp_path, {"chat_template": [{"name": "tool_use", "template": "T"}]})
    tok = Tokenizer(folder)
    assert tok.encode("hi")                                   # plain prompts work
    with pytest.raises(NpqwenError, match="templates named 'tool_use' but none named 'default'"):
        tok.encode_chat([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("content,fragment", [
    (b"[1, 2]", "expected a JSON object, found an array"),
    (b'{"eos_token": "caf\xe9"}', "not UTF-8 text"),
    (b'{"eos_token": ', "not valid JSON"),
])
def test_tokenizer_config_unreadable(tmp_path, content, fragment):
    folder = demo_tokenizer_folder(tmp_path)
    (tmp_path / "tokenizer_config.json").write_bytes(content)
    with pytest.raises(NpqwenError, match="tokenizer_config.json: " + fragment):
        Tokenizer(folder)


def test_chat_template_file_not_utf8(tmp_path):
    folder = demo_tokenizer_folder(tmp_path)
    (tmp_path / "chat_template.jinja").write_bytes(b"{{ 'caf\xe9' }}")
    with pytest.raises(NpqwenError, match="chat_template.jinja: not UTF-8"):
        Tokenizer(folder)


def test_text_that_is_not_unicode_is_refused():
    tok = qwen("qwen2")
    with pytest.raises(NpqwenError, match="lone surrogate at character 3"):
        tok.encode("caf\udce9")          # what Python makes of the bytes b"caf\xe9" read with surrogateescape


@pytest.mark.parametrize("version,ids", [("qwen2", 151646), ("qwen2.5", 151665)])
def test_tokenizer_must_fit_the_model(version, ids):
    """The genuine tokenizers' added tokens reach past the base vocabulary (151643); Qwen2 models
    have 151936 embeddings (152064 for the 7B)."""
    tok = qwen(version)
    assert tok.max_id + 1 == ids
    tok.check_fits(151936)
    tok.check_fits(ids)
    with pytest.raises(NpqwenError) as e:
        tok.check_fits(151643)
    assert f"has {ids} ids" in str(e.value) and "vocab_size is 151643" in str(e.value)


def test_generate_refuses_a_tokenizer_from_another_model():
    from conftest import CHECKPOINTS, golden_model
    from npqwen.generation import generate
    tok = Tokenizer(os.path.join(CHECKPOINTS, "demo"))      # 4003 ids; the golden models have 320
    with pytest.raises(NpqwenError, match="4003 ids .* vocab_size is 320"):
        next(generate(golden_model("gqa3_bf16"), tok, [1, 2, 3], 4))
