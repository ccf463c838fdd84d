"""`python -m npqwen.generate` as a user runs it: a subprocess, stdout piped."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT

DEMO = os.path.join(ROOT, "golden", "checkpoints", "demo")


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "npqwen.generate", *args], cwd=ROOT, input=stdin,
                          capture_output=True, timeout=300)


@pytest.mark.parametrize("args,message", [
    (["--temperature", "-1", "hi"], "temperature"),
    (["--top-p", "0", "hi"], "top-p"),
    (["--top-p", "1.5", "hi"], "top-p"),
    (["--min-p", "2", "hi"], "min-p"),
    (["--top-k", "-3", "hi"], "top-k"),
    (["--repetition-penalty", "0", "hi"], "repetition penalty"),
    (["--max-new-tokens", "0", "hi"], "max-new-tokens"),
    (["--max-new-tokens", "many", "hi"], "max-new-tokens"),
    (["--model", "/no/such/folder", "hi"], "no such folder"),
    ([""], "empty"),
    (["   "], "empty"),
    (["--no-such-option", "hi"], "no-such-option"),
    (["--system", "be brief", "hi"], "--chat"),
])
def test_bad_options_get_one_error_line_and_status_2(args, message):
    r = run(*args)
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err
    assert r.stdout == b""


def test_prompt_file_not_utf8(tmp_path):
    bad = tmp_path / "prompt.txt"
    bad.write_bytes(b"caf\xe9 \xff")
    r = run("--file", str(bad))
    assert r.returncode == 2 and b"not valid UTF-8" in r.stderr and b"Traceback" not in r.stderr
    r = run("-", stdin=b"\xff\xfe")
    assert r.returncode == 2 and b"not valid UTF-8" in r.stderr


def test_demo_completes_the_proverb_greedily_stdout_only_text():
    r = run("--temperature", "0", "--max-new-tokens", "8", "学习如逆水行舟,不进则")
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode("utf-8")
    assert out.startswith("退"), out
    assert "prompt tokens" in r.stderr.decode()      # stats go to stderr only
    assert "tok/s" not in out and "[" not in out


def test_piped_output_equals_the_python_api():
    from npqwen import SamplingSettings, Tokenizer, generate, load_model
    model, tok = load_model(DEMO), Tokenizer(DEMO)
    prompt = "The river"
    want = "".join(t.text for t in generate(model, tok, prompt, 20, SamplingSettings(temperature=0.0),
                                            eos_ids=[]))
    r = run("--temperature", "0", "--repetition-penalty", "1", "--max-new-tokens", "20", prompt)
    assert r.returncode == 0, r.stderr.decode()
    got = r.stdout.decode()
    assert want.startswith(got) and len(got) > 0   # the CLI may stop earlier, at an eos


def test_same_seed_same_output():
    args = ["--temperature", "0.9", "--top-p", "0.95", "--seed", "123", "--max-new-tokens", "24", "Once upon"]
    a, b = run(*args), run(*args)
    assert a.returncode == 0 and a.stdout == b.stdout and a.stdout


def test_chat_one_shot_and_interactive():
    r = run("--chat", "--system", "You are helpful.", "--max-new-tokens", "16", "--temperature", "0", "Hello!")
    assert r.returncode == 0, r.stderr.decode()
    r = run("--chat", "--max-new-tokens", "8", "--temperature", "0", stdin="Hello!\nThanks!\n\n".encode())
    assert r.returncode == 0, r.stderr.decode()
    assert r.stderr.decode().count("prompt tokens") == 2   # two turns answered


def test_prompt_longer_than_the_context():
    r = run("--max-new-tokens", "4", "word " * 5000)
    assert r.returncode == 2 and b"context" in r.stderr and b"Traceback" not in r.stderr
