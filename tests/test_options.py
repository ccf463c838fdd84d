"""Every option a user can type either works or is refused with one `error:` line and exit status 2:
random command lines built from the option grammar (valid and invalid values, junk strings) run
in-process, never a traceback or another status; then the values that used to break (negative and
huge seeds, NaN and infinities, a huge --max-new-tokens, --top-k past the vocabulary) one by one,
and the sampling functions under extreme settings."""

import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from cli_inprocess import load_model_once, run_cli
from conftest import CHECKPOINTS, ROOT
from npqwen.errors import NpqwenError
from npqwen.generation import generate
from npqwen.sampling import SamplingSettings, sample

DEMO = os.path.join(CHECKPOINTS, "demo")


def outcome(argv, stdin=b""):
    """Run one command line; check it ended as a user may see it end. -> (status, stdout, stderr)."""
    status, out, err = run_cli(argv, stdin)  # an exception escaping generate_main fails the test here
    assert "Traceback" not in err
    if status == 0:
        if "usage:" not in out:   # --help prints the usage; a run, one stats line per answer
            assert "[interactive chat" in err or err.count("stopped at") == 1, err
    else:
        assert status == 2, (status, err)
        lines = err.rstrip("\n").split("\n")
        errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
        # one error line: the only line, or (a chat turn that failed) the last one
        assert len(errors) == 1 and errors[0] == len(lines) - 1, err
        assert len(lines) == 1 or "[interactive chat" in err or "prompt tokens" in err, err
    return status, out, err


# ---------------------------------------------------------------------------------------------
# random command lines

# What a user can type: any text (no NUL: argv cannot hold one), and bytes that are not UTF-8,
# which Python hands over as lone surrogates.
typed = st.one_of(st.text(st.characters(exclude_characters="\0"), max_size=10),
                  st.binary(max_size=10).filter(lambda b: b"\0" not in b).map(os.fsdecode))
numbers = st.one_of(
    st.integers(-3, 8).map(str), st.integers(-10**40, 10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e-320", "1e-45", "5e-324", "1e400", "-0", "0.0", "1_000",
                     " 2 ", "0x10", "١٢", "", "1e3"]),
    typed)


def existing_files(tmp):
    utf8, latin1 = os.path.join(tmp, "prompt.txt"), os.path.join(tmp, "latin1.txt")
    with open(utf8, "w", encoding="utf-8") as f:
        f.write("学习如逆水行舟,不进则")
    with open(latin1, "wb") as f:
        f.write(b"caf\xe9")
    return [utf8, latin1, os.path.join(tmp, "missing.txt"), tmp]


def option_value(name, files):
    """A value a user might mean, most of the time; else any number or any text."""
    meant = {
        "--max-new-tokens": st.integers(1, 4).map(str),
        "--temperature": st.sampled_from(["0", "0.7", "2", "1e-300"]),
        "--top-k": st.sampled_from(["0", "1", "40", "4003", "5000", str(10**30)]),
        "--top-p": st.sampled_from(["0.5", "0.9", "1", "1.5"]),
        "--min-p": st.sampled_from(["0", "0.1", "1"]),
        "--repetition-penalty": st.sampled_from(["1", "1.3", "1e300", "1e-300"]),
        "--seed": st.sampled_from(["0", "7", "-1", str(2**64), str(10**100)]),
        "--weights": st.sampled_from(["auto", "float32", "stream"]),
        "--model": st.sampled_from([DEMO, DEMO, "/no/such/folder", ROOT, os.path.join(ROOT, "README.md"),
                                    os.path.join(CHECKPOINTS, "gqa3_bf16")]),
        "--file": st.sampled_from(files),
        "--system": st.sampled_from(["Be brief.", "你是一个助手", ""]),
    }[name]
    return st.one_of(meant, meant, meant, typed if name in ("--weights", "--model", "--file", "--system") else numbers)


OPTIONS = ["--max-new-tokens", "--temperature", "--top-k", "--top-p", "--min-p", "--repetition-penalty", "--seed",
           "--weights", "--model", "--file", "--system"]


@st.composite
def command_lines(draw, files):
    argv = ["--max-new-tokens", "3"]   # (a later --max-new-tokens overrides it; this keeps most runs short)
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["option"] * 6 + ["flag", "junk"]))
        if kind == "option":
            name = draw(st.sampled_from(OPTIONS))
            argv += [name, draw(option_value(name, files))]
        elif kind == "flag":
            argv.append(draw(st.sampled_from(["--chat", "--chat", "-", "--", "--help", "--tem", "--m", "-x"])))
        else:
            argv.append(draw(typed))
    if draw(st.integers(0, 5)):   # a prompt, most of the time
        argv.append(draw(st.one_of(st.sampled_from(["Once upon a time", "学习如逆水行舟,不进则", "🪐", "-"]),
                                   st.sampled_from(["Once upon a time", "", " "]), typed)))
    stdin = draw(st.one_of(st.sampled_from([b"hello\n", "你好\n学习\n\n".encode(), b"The river"]),
                           st.sampled_from([b"", b"\xff\xfe\n"]), st.binary(max_size=20)))
    return argv, stdin


def test_random_command_lines_work_or_get_one_error_line(tmp_path):
    files = existing_files(str(tmp_path))

    @settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(command_lines(files))
    def check(case):
        outcome(*case)
    check()


# ---------------------------------------------------------------------------------------------
# the values that used to break, one by one

def test_seeds_negative_refused_huge_accepted():
    status, _, err = outcome(["--seed", "-1", "hi"])
    assert status == 2 and "--seed" in err and "-1" in err
    runs = [outcome(["--temperature", "1", "--seed", s, "--max-new-tokens", "12", "Once upon"])
            for s in (str(10**100), str(10**100), str(10**100 + 1), "0")]
    assert all(r[0] == 0 for r in runs)
    assert runs[0][1] == runs[1][1] and runs[0][1]       # any size: the same seed, the same text
    assert len({runs[1][1], runs[2][1], runs[3][1]}) > 1
    with pytest.raises(NpqwenError, match="seed"):
        list(generate(load_model_once(DEMO), None, [1, 2], 3, seed=-5))


@pytest.mark.parametrize("option,name", [("--temperature", "temperature"), ("--top-p", "top-p"),
                                         ("--min-p", "min-p"), ("--repetition-penalty", "repetition penalty")])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_nan_and_infinities_are_refused(option, name, value):
    status, out, err = outcome([option, value, "hi"])
    assert status == 2 and out == ""
    assert err.startswith(f"error: {name} must be") or err.startswith(f"error: argument {option}: expected")


@pytest.mark.parametrize("option,value", [
    ("--temperature", "5e-324"), ("--temperature", "1e-40"), ("--temperature", "1.7e308"),
    ("--repetition-penalty", "5e-324"), ("--repetition-penalty", "1e-300"), ("--repetition-penalty", "1.7e308"),
    ("--top-p", "5e-324"), ("--min-p", "1"), ("--top-k", str(10**30))])
def test_extreme_values_work(option, value):
    """Tiny and huge values that are valid sample without overflowing into NaN."""
    status, _, err = outcome(["--temperature", "1", "--repetition-penalty", "1.5", option, value,  # (the last wins)
                              "--seed", "0", "--max-new-tokens", "8", "Once upon a time"])
    assert status == 0, err


def test_huge_max_new_tokens_stops_at_the_context():
    status, _, err = outcome(["--max-new-tokens", str(10**30), "--temperature", "0", "hi"])
    assert status == 0 and ("end of sequence" in err or "context limit" in err)
    model = load_model_once(os.path.join(CHECKPOINTS, "rope_linear"))   # context 512 positions
    tokens = list(generate(model, None, [1, 2, 3], 10**30, eos_ids=[]))
    assert len(tokens) == 512 - 3 and tokens[-1].finish_reason == "context"


def test_kv_cache_larger_than_memory_is_refused():
    model = load_model_once(os.path.join(CHECKPOINTS, "gqa3_bf16"))
    with pytest.raises(NpqwenError, match="KV cache"):
        list(generate(model, None, [1, 2, 3], 10**13, eos_ids=[], max_context=10**13))


def test_top_k_past_the_vocabulary_keeps_every_token():
    """As transformers clamps top_k to the vocabulary: the same draws as top-k off."""
    runs = [outcome(["--temperature", "1", "--seed", "3", "--top-k", k, "--max-new-tokens", "16", "Once upon"])[1]
            for k in ("0", "4003", str(10**30))]
    assert runs[0] == runs[1] == runs[2] and runs[0]
    assert outcome(["--temperature", "1", "--seed", "3", "--top-k", "1", "--max-new-tokens", "16",
                    "Once upon"])[1] != runs[0]


def test_other_text_in_options_gets_one_line():
    for argv in (["--model", "a\nb", "hi"], ["--nope\nx", "hi"], [os.fsdecode(b"caf\xe9")],
                 ["--chat", "--system", os.fsdecode(b"\xff"), "hi"]):
        status, out, err = outcome(argv)
        assert status == 2 and err.count("\n") == 1, err
    status, _, err = outcome(["--chat", "--max-new-tokens", "2"], stdin=b"hello\n\xff\xfe\n")
    assert status == 2 and "standard input" in err and err.count("stopped at") == 1


# ---------------------------------------------------------------------------------------------
# sampling under extreme settings

extreme = st.one_of(st.floats(5e-324, 1e-30), st.floats(1e-30, 1e30), st.floats(1e30, 1.7e308))


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(2, 30)), elements=st.floats(-30, 30, width=32)),
       extreme, st.integers(0, 10**30), st.floats(5e-324, 1.0), st.floats(0.0, 1.0), extreme,
       st.integers(0, 40), st.integers(0, 2**32))
def test_sample_never_fails_or_warns(logits, t, k, p, m, penalty, n_seen, seed):
    s = SamplingSettings(temperature=t, top_k=k, top_p=p, min_p=m, repetition_penalty=penalty).validate()
    rng = np.random.default_rng(seed)
    seen = rng.integers(0, logits.shape[1], (logits.shape[0], n_seen))
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no overflow, no division by zero, no NaN
        ids = sample(logits, s, rng, seen)
    assert ids.shape == (logits.shape[0],) and ((0 <= ids) & (ids < logits.shape[1])).all()
    if t < 1e-30 and n_seen == 0:  # a vanishing temperature draws the most likely token, its limit
        assert (logits[np.arange(len(ids)), ids] == logits.max(-1)).all()
