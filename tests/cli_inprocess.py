"""Running `python -m npqwen.generate` in-process, as property tests need it (hundreds of command
lines in seconds): npqwen.cli.generate_main(argv) with standard input, output and error replaced by
byte buffers, and each checkpoint's model loaded once."""

import io
import os
import sys
from contextlib import contextmanager

import npqwen.cli as cli
from npqwen.model import load_model

_models = {}


def load_model_once(path, weights="auto"):
    key = (os.path.realpath(path), weights)
    if key not in _models:
        _models[key] = load_model(path, weights=weights)
    return _models[key]


@contextmanager
def _swapped_streams(stdin: bytes):
    saved = sys.stdin, sys.stdout, sys.stderr, cli.load_model
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    # as Python sets them up in a UTF-8 locale: stdout strict, stderr escaping what it cannot encode
    sys.stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    sys.stderr = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace", write_through=True)
    cli.load_model = load_model_once
    try:
        yield
    finally:
        sys.stdin, sys.stdout, sys.stderr, cli.load_model = saved


def run_cli(argv, stdin: bytes = b""):
    """-> (exit status, stdout text, stderr text). An exception escaping generate_main propagates."""
    with _swapped_streams(stdin):
        out, err = sys.stdout, sys.stderr
        status = cli.generate_main(list(argv))
        out.flush(), err.flush()
        return status, out.buffer.getvalue().decode("utf-8"), err.buffer.getvalue().decode("utf-8")
