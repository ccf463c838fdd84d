"""generation_config.json, field by field: the genuine Qwen files read as transformers reads them,
and every field npqwen reads refused, naming the file, the field and what was found, when its type
or range is wrong or an id lies outside the vocabulary."""

import json
import os
from types import SimpleNamespace

import pytest

from cli_inprocess import run_cli
from conftest import CHECKPOINTS, shared_asset
from npqwen.config import Qwen2Config
from npqwen.errors import NpqwenError
from npqwen.generation_config import default_settings, eos_token_ids, parse_generation_config, read_generation_config
from npqwen.sampling import SamplingSettings

DEMO = os.path.join(CHECKPOINTS, "demo")


@pytest.mark.parametrize("model,want", [
    ("Qwen2.5-7B-Instruct", SamplingSettings(temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.05)),
    ("Qwen3-4B", SamplingSettings(temperature=0.6, top_k=20, top_p=0.95)),
])
def test_genuine_files(model, want):
    folder = shared_asset("configs", model)
    d = json.load(open(os.path.join(folder, "config.json")))   # (Qwen3's is not a Qwen2Config: its two fields)
    cfg = SimpleNamespace(vocab_size=d["vocab_size"], eos_token_id=d["eos_token_id"])
    g = read_generation_config(folder, cfg.vocab_size)
    assert default_settings(g) == want
    assert eos_token_ids(cfg, g) == [151645, 151643]
    assert default_settings(g, do_sample=False) == SamplingSettings(repetition_penalty=want.repetition_penalty)


def test_absent_and_null_fields_take_transformers_defaults():
    cfg = Qwen2Config.from_file(DEMO)
    assert read_generation_config("/no/such/folder", 10) == parse_generation_config({}, "x", 10)
    g = parse_generation_config({"do_sample": True, "temperature": None, "top_k": None, "eos_token_id": 7}, "x", 10)
    assert default_settings(g) == SamplingSettings(temperature=1.0, top_k=50, top_p=1.0)
    assert eos_token_ids(cfg, g) == [7]
    assert eos_token_ids(cfg, parse_generation_config({}, "x", 10)) == [4002]             # config.json's
    assert eos_token_ids(cfg, parse_generation_config({"eos_token_id": None}, "x", 10)) == []   # none
    greedy = parse_generation_config({"do_sample": False, "temperature": 0.7}, "x", 10)
    assert default_settings(greedy).temperature == 0                                      # do_sample false: greedy
    assert default_settings(greedy, do_sample=True).temperature == 0.7


@pytest.mark.parametrize("field,value,fragment", [
    ("eos_token_id", "<|im_end|>", "must be a token id or a list of token ids, found '<|im_end|>'"),
    ("eos_token_id", [4002, "x"], "found [4002, 'x']"),
    ("eos_token_id", 4003, "token id 4003, outside the model's vocabulary [0, 4003)"),
    ("eos_token_id", [-1], "token id -1"),
    ("eos_token_id", 1.0, "found 1.0"),
    ("do_sample", "yes", "must be true or false, found 'yes'"),
    ("temperature", -0.5, "must be a number >= 0 (0 = greedy), found -0.5"),
    ("temperature", "0.7", "found '0.7'"),
    ("temperature", float("nan"), "found nan"),
    ("temperature", True, "found True"),
    ("top_k", 2.5, "must be an integer >= 0 (0 = off), found 2.5"),
    ("top_k", -1, "found -1"),
    ("top_p", 0, "must be a number in (0, 1], found 0"),
    ("top_p", 1.5, "found 1.5"),
    ("min_p", 2, "must be a number in [0, 1], found 2"),
    ("repetition_penalty", 0, "must be a number > 0 (1 = off), found 0"),
    ("repetition_penalty", float("inf"), "found inf"),
    ("max_new_tokens", 0, "must be an integer >= 1, found 0"),
    ("max_new_tokens", "256", "found '256'"),
    ("max_new_tokens", 10**100, None),   # valid: generation stops at the context anyway
])
def test_every_field_is_checked(tmp_path, field, value, fragment):
    path = tmp_path / "generation_config.json"
    path.write_text(json.dumps({"do_sample": True, field: value}))
    if fragment is None:
        assert getattr(read_generation_config(str(tmp_path), 4003), field) == value
        return
    with pytest.raises(NpqwenError) as e:
        read_generation_config(str(tmp_path), 4003)
    assert str(e.value).startswith(f"{path}: field '{field}' ") and fragment in str(e.value), str(e.value)


@pytest.mark.parametrize("text,fragment", [
    ('{"do_sample": tru', "not valid JSON"),
    ('[1, 2]', "expected a JSON object, found an array"),
    ('[' * 100000 + ']' * 100000, "not usable JSON"),
    ('{"top_k": ' + '9' * 5000 + '}', "not usable JSON"),
])
def test_unreadable_files(tmp_path, text, fragment):
    (tmp_path / "generation_config.json").write_text(text)
    with pytest.raises(NpqwenError, match="generation_config.json: " + fragment):
        read_generation_config(str(tmp_path), 10)
    (tmp_path / "generation_config.json").write_bytes(b'{"top_k": "caf\xe9"}')
    with pytest.raises(NpqwenError, match="not UTF-8"):
        read_generation_config(str(tmp_path), 10)


def test_config_json_eos_token_id_is_checked_too():
    cfg = Qwen2Config.from_file(DEMO)
    cfg.eos_token_id = "<|im_end|>"
    with pytest.raises(NpqwenError, match="config.json: field 'eos_token_id' must be a token id"):
        eos_token_ids(cfg)


def test_command_line_refuses_a_bad_file_before_loading(tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (d / name).symlink_to(os.path.join(DEMO, name))
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": "<|im_end|>"}))
    status, out, err = run_cli(["--model", str(d), "hi"])    # no weights: the file is refused first
    assert status == 2 and out == ""
    assert err == f"error: {d}/generation_config.json: field 'eos_token_id' must be a token id or a list of " \
                  f"token ids, found '<|im_end|>'\n"
