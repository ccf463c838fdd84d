"""Qwen2Config parsing: real Qwen2 / Qwen2.5 config.json files, the 4.x and 5.x on-disk forms,
transformers 5.x's layer_types derivation, and a ConfigError naming the field for each bad input."""

import json
import math
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npqwen import ConfigError, NpqwenError, Qwen2Config
from npqwen.primitives import rope_inv_freq

from conftest import SHARED, shared_asset

CONFIGS = os.path.join(SHARED, "configs")
SHARED_NAMES = sorted(os.listdir(CONFIGS)) if os.path.isdir(CONFIGS) else ["(../shared missing)"]

# A small valid config, in transformers 4.x form.
BASE = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
    "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
    "num_attention_heads": 8, "num_key_value_heads": 2, "max_position_embeddings": 4096,
    "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
    "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 28, "torch_dtype": "bfloat16",
}


def parse(**changes):
    d = {**BASE, **changes}
    for k in [k for k, v in changes.items() if v is DROP]:
        del d[k]
    return Qwen2Config.from_dict(d)


DROP = object()


def raises_config_error(*needles, **changes):
    with pytest.raises(ConfigError) as e:
        parse(**changes)
    for needle in needles:
        assert needle in str(e.value), f"{needle!r} not in: {e.value}"
    return str(e.value)


# ---------------------------------------------------------------------------------------------
# real configs


@pytest.mark.parametrize("name", [n for n in SHARED_NAMES if n != "Qwen3-4B"])
def test_shared_qwen2_configs_parse(name):
    path = shared_asset("configs", name, "config.json")
    with open(path) as f:
        raw = json.load(f)
    cfg = Qwen2Config.from_file(os.path.dirname(path))
    assert cfg == Qwen2Config.from_file(path)  # a folder or the file itself
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "max_position_embeddings", "max_window_layers", "tie_word_embeddings",
                "use_sliding_window", "bos_token_id", "eos_token_id"):
        assert getattr(cfg, key) == raw[key], key
    assert cfg.rms_norm_eps == raw["rms_norm_eps"]
    assert cfg.head_dim == raw["hidden_size"] // raw["num_attention_heads"]
    assert cfg.head_dim * raw["num_attention_heads"] == raw["hidden_size"]
    assert cfg.num_key_value_groups * raw["num_key_value_heads"] == raw["num_attention_heads"]
    assert cfg.rope_parameters == {"rope_type": "default", "rope_theta": raw["rope_theta"]}
    assert cfg.rope_theta == raw["rope_theta"] and cfg.rope_scaling is None
    assert cfg.dtype == cfg.torch_dtype == raw["torch_dtype"] == "bfloat16"
    assert raw["use_sliding_window"] is False and raw["sliding_window"] is not None
    assert cfg.sliding_window is None  # transformers drops it when use_sliding_window is false
    assert cfg.layer_types == ["full_attention"] * raw["num_hidden_layers"]
    assert all(cfg.layer_window(i) is None for i in range(raw["num_hidden_layers"]))
    assert cfg.model_type == "qwen2" and cfg.architectures == ["Qwen2ForCausalLM"]


def test_qwen2_7b_values():
    cfg = Qwen2Config.from_file(shared_asset("configs", "Qwen2-7B-Instruct"))
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.num_key_value_groups) == (28, 4, 7)
    assert cfg.head_dim == 128 and cfg.num_hidden_layers == 28 and cfg.vocab_size == 152064


# ---------------------------------------------------------------------------------------------
# rope: 4.x and 5.x forms


ROPE_CASES = {
    "linear": {"factor": 2.0},
    "dynamic": {"factor": 3.0},
    "yarn": {"factor": 4.0, "original_max_position_embeddings": 1024},
}


@pytest.mark.parametrize("kind", sorted(ROPE_CASES))
def test_rope_forms_agree(kind):
    extra = ROPE_CASES[kind]
    old_type = parse(rope_theta=500000.0, rope_scaling={"type": kind, **extra}).rope_parameters
    old_rope_type = parse(rope_theta=500000.0, rope_scaling={"rope_type": kind, **extra}).rope_parameters
    both = parse(rope_theta=500000.0, rope_scaling={"type": kind, "rope_type": kind, **extra}).rope_parameters
    new = parse(rope_theta=DROP, rope_parameters={"rope_type": kind, "rope_theta": 500000.0, **extra}).rope_parameters
    assert old_type == old_rope_type == both == new
    assert new["rope_type"] == kind and new["rope_theta"] == 500000.0
    for key, value in extra.items():
        assert new[key] == value
    cfg = parse(rope_theta=DROP, rope_parameters={"rope_type": kind, "rope_theta": 500000.0, **extra})
    assert cfg.rope_theta == 500000.0 and cfg.rope_scaling == new  # the 4.x names as views


def test_default_rope_forms_agree():
    forms = [parse(rope_theta=5e5), parse(rope_theta=5e5, rope_scaling=None),
             parse(rope_theta=DROP, rope_parameters={"rope_type": "default", "rope_theta": 5e5}),
             parse(rope_theta=5e5, rope_scaling={"type": "default"})]
    assert all(f.rope_parameters == {"rope_type": "default", "rope_theta": 5e5} for f in forms)
    assert parse(rope_theta=DROP).rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}


def test_qwen25_yarn_snippet():
    """The rope_scaling block Qwen2.5's model cards tell users to add for 128K context."""
    snippet = {"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"}
    cfg = parse(max_position_embeddings=32768, rope_scaling=snippet, hidden_size=3584, num_attention_heads=28,
                num_key_value_heads=4)
    rp = cfg.rope_parameters
    assert (rp["rope_type"], rp["rope_theta"], rp["factor"], rp["original_max_position_embeddings"]) == \
        ("yarn", 1000000.0, 4.0, 32768)
    assert "type" not in rp
    inv_freq, scale = rope_inv_freq(cfg.head_dim, rp, cfg.max_position_embeddings)
    assert inv_freq.shape == (64,) and scale == pytest.approx(0.1 * math.log(4.0) + 1)


def test_qwen25_yarn_snippet_in_a_real_config(tmp_path):
    with open(shared_asset("configs", "Qwen2.5-7B-Instruct", "config.json")) as f:
        raw = json.load(f)
    raw["rope_scaling"] = {"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    cfg = Qwen2Config.from_file(str(tmp_path))
    assert cfg.rope_parameters["rope_type"] == "yarn" and cfg.rope_parameters["factor"] == 4.0


# ---------------------------------------------------------------------------------------------
# layer_types, as transformers 5.x derives them


@settings(max_examples=100, deadline=None)
@given(n_layers=st.integers(1, 12), use_sw=st.booleans(), window=st.sampled_from(["absent", None]) | st.integers(1, 9000),
       mwl=st.sampled_from(["absent"]) | st.integers(0, 15))
def test_layer_types_derivation(n_layers, use_sw, window, mwl):
    if use_sw and window == "absent":
        window = 4096  # the default, when present; the absent case is test_sliding_window_defaults_to_4096
    d = {**BASE, "num_hidden_layers": n_layers, "use_sliding_window": use_sw}
    for key, value in (("sliding_window", window), ("max_window_layers", mwl)):
        d.pop(key)
        if value != "absent":
            d[key] = value
    cfg = Qwen2Config.from_dict(d)
    # transformers 5.x Qwen2Config.__post_init__, restated:
    want_window = (4096 if window == "absent" else window) if use_sw else None
    want_mwl = 28 if mwl == "absent" else mwl
    want = ["sliding_attention" if want_window is not None and i >= want_mwl else "full_attention"
            for i in range(n_layers)]
    assert cfg.sliding_window == want_window
    assert cfg.max_window_layers == want_mwl
    assert cfg.layer_types == want
    assert [cfg.layer_window(i) for i in range(n_layers)] == [want_window if t == "sliding_attention" else None
                                                              for t in want]


def test_sliding_window_defaults_to_4096():
    """transformers 5.x Qwen2Config: sliding_window defaults to 4096 when use_sliding_window is true."""
    d = {**BASE, "num_hidden_layers": 30, "use_sliding_window": True}
    del d["sliding_window"]
    cfg = Qwen2Config.from_dict(d)
    assert cfg.sliding_window == 4096
    assert cfg.layer_types == ["full_attention"] * 28 + ["sliding_attention"] * 2


def test_layer_types_by_hand():
    cfg = parse(use_sliding_window=True, sliding_window=8, max_window_layers=1)
    assert cfg.layer_types == ["full_attention"] + ["sliding_attention"] * 3
    assert [cfg.layer_window(i) for i in range(4)] == [None, 8, 8, 8]
    assert parse(use_sliding_window=False, sliding_window=8, max_window_layers=1).layer_types == ["full_attention"] * 4


def test_explicit_layer_types_are_kept():
    types = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
    cfg = parse(use_sliding_window=True, sliding_window=16, layer_types=types)
    assert cfg.layer_types == types and [cfg.layer_window(i) for i in range(4)] == [16, None, 16, None]


# ---------------------------------------------------------------------------------------------
# errors: a ConfigError naming the field


@pytest.mark.parametrize("field", ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                   "num_attention_heads"])
def test_missing_required_field(field):
    raises_config_error(field, "missing", **{field: DROP})
    raises_config_error(field, **{field: None})


@pytest.mark.parametrize("field", ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                   "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                                   "max_window_layers"])
@pytest.mark.parametrize("bad", [-8, True, False, "64", 64.0, 2.5, [64], {"n": 64}])
def test_bad_sizes(field, bad):
    raises_config_error(field, **{field: bad})


@pytest.mark.parametrize("field", ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                   "num_attention_heads", "num_key_value_heads", "max_position_embeddings"])
def test_zero_sizes(field):
    raises_config_error(field, **{field: 0})


def test_bad_sliding_window_size():
    for bad in (0, -1, "8", 8.5, True):
        raises_config_error("sliding_window", use_sliding_window=True, sliding_window=bad)


def test_hidden_size_not_divisible_by_heads():
    msg = raises_config_error("hidden_size", "num_attention_heads", hidden_size=100, num_attention_heads=3,
                              num_key_value_heads=1)
    assert "100" in msg


def test_heads_not_divisible_by_kv_heads():
    raises_config_error("num_attention_heads", "num_key_value_heads", num_attention_heads=8, num_key_value_heads=3)


def test_odd_head_dim():
    raises_config_error("head_dim", hidden_size=72, num_attention_heads=8, num_key_value_heads=8)


@pytest.mark.parametrize("model_type", ["llama", "qwen", "qwen4", "Qwen2", ""])
def test_unsupported_model_type(model_type):
    raises_config_error("model_type", repr(model_type), "qwen2", model_type=model_type)


def test_missing_model_type():
    raises_config_error("model_type", model_type=DROP)


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Qwen2ForSequenceClassification", "Qwen2MoeForCausalLM"])
def test_unsupported_architecture(arch):
    raises_config_error(repr(arch), "Qwen2ForCausalLM", "architecture", architectures=[arch])
    raises_config_error(repr(arch), "Qwen2ForCausalLM", architectures=["Qwen2ForCausalLM", arch])


def test_architectures_not_a_list_of_names():
    raises_config_error("architectures", architectures="Qwen2ForCausalLM")
    raises_config_error("architectures", architectures=[1])


@pytest.mark.parametrize("rope_type", ["llama3", "longrope", "su", "mrope", "ntk"])
@pytest.mark.parametrize("form", ["type", "rope_type", "rope_parameters"])
def test_unsupported_rope_type(rope_type, form):
    if form == "rope_parameters":
        changes = {"rope_parameters": {"rope_type": rope_type, "rope_theta": 1e6, "factor": 8.0}}
    else:
        changes = {"rope_scaling": {form: rope_type, "factor": 8.0}}
    msg = raises_config_error(repr(rope_type), "default", "yarn", **changes)
    assert ("rope_parameters" if form == "rope_parameters" else "rope_scaling") in msg


def test_bad_rope_values():
    raises_config_error("factor", rope_scaling={"type": "linear"})
    raises_config_error("factor", rope_scaling={"type": "linear", "factor": 0.5})
    raises_config_error("factor", rope_scaling={"type": "dynamic", "factor": "2"})
    raises_config_error("rope_theta", rope_theta=1.0)
    raises_config_error("rope_theta", rope_theta="1e6")
    raises_config_error("original_max_position_embeddings",
                        rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": -1})
    raises_config_error("low_freq_factor", rope_scaling={"type": "yarn", "factor": 4.0, "low_freq_factor": 1.0})
    raises_config_error("rope_scaling", rope_scaling=[1, 2])


@pytest.mark.parametrize("layer_types", [["full_attention"] * 3, ["full_attention"] * 5, [], "full_attention"])
def test_layer_types_wrong_length(layer_types):
    raises_config_error("layer_types", "4", layer_types=layer_types)


def test_layer_types_unknown_entry():
    raises_config_error("layer_types", "'chunked_attention'",
                        layer_types=["full_attention", "chunked_attention", "full_attention", "full_attention"])


def test_sliding_layer_types_without_window():
    raises_config_error("sliding_window", layer_types=["sliding_attention"] * 4, use_sliding_window=False)


def test_other_bad_fields():
    raises_config_error("hidden_act", hidden_act="gelu")
    raises_config_error("rms_norm_eps", rms_norm_eps=0)
    raises_config_error("rms_norm_eps", rms_norm_eps="1e-6")
    raises_config_error("tie_word_embeddings", tie_word_embeddings="false")
    raises_config_error("use_sliding_window", use_sliding_window=1)


@pytest.mark.parametrize("value", [[], [BASE], "qwen2", 3, None, True])
def test_json_that_is_not_an_object(value, tmp_path):
    with pytest.raises(ConfigError, match="JSON object"):
        Qwen2Config.from_dict(value)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(value))
    with pytest.raises(ConfigError) as e:
        Qwen2Config.from_file(str(tmp_path))
    assert str(path) in str(e.value) and "JSON object" in str(e.value)


@pytest.mark.parametrize("content", [b"", b"{", b"{'model_type': 'qwen2'}", b"model_type: qwen2",
                                     json.dumps(BASE).encode()[:-1], b"\xff\xfe{}", b"{\"a\": 1} trailing"])
def test_not_json(content, tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as e:
        Qwen2Config.from_file(str(path))
    assert str(path) in str(e.value)


def test_no_config_json(tmp_path):
    with pytest.raises(ConfigError) as e:
        Qwen2Config.from_file(str(tmp_path))
    assert "config.json" in str(e.value)


def test_config_error_is_an_npqwen_error():
    assert issubclass(ConfigError, NpqwenError) and issubclass(ConfigError, ValueError)


def test_kv_heads_default_to_attention_heads():
    cfg = parse(num_key_value_heads=DROP)
    assert cfg.num_key_value_heads == 8 and cfg.num_key_value_groups == 1
    assert parse(num_key_value_heads=None).num_key_value_heads == 8


def test_explicit_head_dim():
    cfg = parse(head_dim=16)  # 8 heads x 16 != hidden_size 64: allowed, as in transformers
    assert cfg.head_dim == 16


def test_valid_base_config_parses():
    """The base every error test modifies is itself valid, so each error comes from the change."""
    cfg = parse()
    assert (cfg.head_dim, cfg.num_key_value_groups, cfg.layer_types) == (8, 4, ["full_attention"] * 4)


# A JSON value of any shape in any field: parsing either succeeds or raises ConfigError.
json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False,
                           allow_infinity=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=3), max_leaves=6)
fields = st.sampled_from(sorted(BASE) + ["rope_scaling", "rope_parameters", "layer_types", "head_dim", "hidden_act",
                                         "dtype", "partial_rotary_factor"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(fields, json_values, min_size=1, max_size=3))
def test_any_json_values_give_config_or_config_error(changes):
    try:
        cfg = Qwen2Config.from_dict({**BASE, **changes})
    except ConfigError:
        return
    assert cfg.num_attention_heads % cfg.num_key_value_heads == 0
    assert len(cfg.layer_types) == cfg.num_hidden_layers and cfg.head_dim % 2 == 0


@pytest.mark.parametrize("changes", [{"rope_theta": 10**400}, {"rms_norm_eps": 10**400},
                                     {"rope_scaling": {"type": "linear", "factor": 10**400}}])
def test_huge_integers_give_config_error(changes):
    with pytest.raises(ConfigError):
        parse(**changes)


def test_integer_literal_over_the_digit_limit(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(BASE)[:-1] + ', "vocab_size": ' + "9" * 5000 + "}")
    with pytest.raises(ConfigError):
        Qwen2Config.from_file(str(path))
