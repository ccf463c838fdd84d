"""notebooks/qwen3_5_hybrid.ipynb: executed top to bottom on every run, as test_notebook.py does the Qwen2 one.

The notebook checks each of its steps against npqwen's own forward (a wrong step raises inside the
notebook and fails the run here); this file adds what a reader of the stored copy relies on.
`python tests/test_notebook_hybrid.py` re-executes the notebook and saves it with its outputs.
"""

import os
import sys

import nbformat
import pytest

from test_notebook import ROOT, check_stored, execute, outputs

NOTEBOOK = os.path.join(ROOT, "notebooks", "qwen3_5_hybrid.ipynb")
# the memory section reads the released Qwen3.5-0.8B config beside this checkout
QWEN3_5_CONFIG = os.path.join(ROOT, "..", "shared", "assets", "qwen3_5", "configs", "Qwen3.5-0.8B", "config.json")
CHECKS = ["convolution against deltanet.causal_conv", "keys of unit length", "read-back after a write",
          "every head against deltanet.delta_rule", "layer 0's DeltaNet against npqwen's forward", "layer 0 output",
          "head 0 in chunks of 4 against the token loop", "deltanet.delta_rule_chunked, chunks of 4",
          "deltanet.delta_rule_chunked, chunks of 64", "layer 1 (DeltaNet) output", "layer 2 (DeltaNet) output",
          "gated attention against npqwen's forward", "layer 3 and the final norm", "the demo's DeltaNet states",
          "the demo's KV cache per token", "logits"]


@pytest.fixture(scope="module")
def executed():
    if not os.path.exists(QWEN3_5_CONFIG):
        pytest.skip(f"../shared/assets/qwen3_5 is not beside this checkout ({QWEN3_5_CONFIG} missing)")
    return execute(NOTEBOOK)  # raises CellExecutionError, naming the cell, if a step disagrees with npqwen


def test_the_notebook_runs_and_draws_its_pictures(executed):
    images = [o for o in outputs(executed, "display_data") if "image/png" in o.data]
    assert len(images) == 2  # the DeltaNet gates (decay and beta per layer) and the attention layer's output gate
    stderr = "".join(o.text for o in outputs(executed, "stream") if o.name == "stderr")
    assert "missing from" not in stderr and "Warning" not in stderr, stderr
    printed = "".join(o.text for o in outputs(executed, "stream") if o.name == "stdout")
    lines = printed.splitlines()
    for check in CHECKS:  # every check the notebook makes, reported back
        assert any(line.startswith(check) and ": matches" in line for line in lines), check
    for name in ("Qwen3.5-0.8B", "Qwen3.5-9B", "Qwen3.5-35B-A3B"):
        assert name in printed
    assert "学习如逆水行舟,不进则退" in printed


def test_the_stored_notebook_is_the_executed_one(executed):
    """Where notebooks are rendered without a kernel, each cell shows what it prints and draws today."""
    check_stored(NOTEBOOK, executed, "test_notebook_hybrid.py")


if __name__ == "__main__":
    nb = execute(sys.argv[1] if len(sys.argv) > 1 else NOTEBOOK)
    nbformat.write(nb, sys.argv[1] if len(sys.argv) > 1 else NOTEBOOK)
    print(f"executed and saved {NOTEBOOK} ({os.path.getsize(NOTEBOOK)} bytes)")
