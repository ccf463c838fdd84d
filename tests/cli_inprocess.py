"""Running `python -m npqwen.generate` (and the other tools) in-process, as property tests need it
(hundreds of command lines in seconds): npqwen.cli.generate_main(argv) with standard input, output
and error replaced by byte buffers, and each checkpoint's model loaded once."""

import io
import os
import sys
from contextlib import contextmanager

import npqwen.cli as cli
import npqwen.compare as compare
import npqwen.score as score
from npqwen.model import load_model

TOOLS = (cli, score, compare)   # the modules whose load_model is replaced by load_model_once

_models = {}


def load_model_once(path, weights="auto"):
    key = (os.path.realpath(path), weights)
    if key not in _models:
        _models[key] = load_model(path, weights=weights)
    return _models[key]


@contextmanager
def _swapped_streams(stdin: bytes):
    saved, loaders = (sys.stdin, sys.stdout, sys.stderr), [m.load_model for m in TOOLS]
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    # as Python sets them up in a UTF-8 locale: stdout strict, stderr escaping what it cannot encode
    sys.stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    sys.stderr = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace", write_through=True)
    for m in TOOLS:
        m.load_model = load_model_once
    try:
        yield
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
        for m, loader in zip(TOOLS, loaders):
            m.load_model = loader


def run_cli(argv, stdin: bytes = b"", main=cli.generate_main):
    """-> (exit status, stdout text, stderr text) of main(argv): `python -m npqwen.generate`, or
    score.main or compare.main. An exception escaping main propagates."""
    with _swapped_streams(stdin):
        out, err = sys.stdout, sys.stderr
        status = main(list(argv))
        out.flush(), err.flush()
        return status, out.buffer.getvalue().decode("utf-8"), err.buffer.getvalue().decode("utf-8")
