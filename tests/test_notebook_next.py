"""notebooks/qwen3_8_new_blocks.ipynb: Qwen3.8-Flash-Next's new blocks (hyper-connections, n-gram
embeddings, QSA) taken apart by hand, executed top to bottom on every run, as the Qwen2 walkthrough
is (tests/test_notebook.py).

The notebook checks each step against model.forward (a wrong step raises inside the notebook and
fails the run here); this file adds what a reader of the stored copy relies on.
`python tests/test_notebook_next.py` re-executes the notebook and saves it with its outputs.
"""

import os

import nbformat
import pytest

from test_notebook import ROOT, check_stored, execute, outputs

NOTEBOOK = os.path.join(ROOT, "notebooks", "qwen3_8_new_blocks.ipynb")


@pytest.fixture(scope="module")
def executed():
    return execute(NOTEBOOK)  # raises CellExecutionError, naming the cell, if a step disagrees with model.forward


def test_the_notebook_runs_and_draws_its_pictures(executed):
    images = [o for o in outputs(executed, "display_data") if "image/png" in o.data]
    assert len(images) == 2  # the streams' read and write weights; the blocks QSA chooses
    stderr = "".join(o.text for o in outputs(executed, "stream") if o.name == "stderr")
    assert "missing from" not in stderr and "Warning" not in stderr, stderr
    printed = "".join(o.text for o in outputs(executed, "stream") if o.name == "stdout")
    assert "random" in "".join(c.source for c in executed.cells if c.cell_type == "markdown")
    checked = [line for line in printed.splitlines() if ": matches (largest difference" in line]
    for step in ("the embedding in 4 streams", "against hyper.read", "layer 0's output", "the final mixer and the LM head",
                 "against engram.ngram_rows", "against engram.NgramTable.rows", "against engram.ple",
                 "layer 1's output, with them", "against qsa.Selection.keep", "layer 3 (QSA) over 2048 tokens"):
        assert any(step in line for line in checked), step  # each block checked against npqwen's own forward
    assert len(checked) >= 20 and "differs" not in printed  # every check the notebook makes reported back
    assert "e5 ad a6" in printed  # the prompt's bytes: 学 is the trigram ending at position 2


def test_the_stored_notebook_is_the_executed_one(executed):
    """Where notebooks are rendered without a kernel, each cell shows what it prints and draws today."""
    check_stored(NOTEBOOK, executed, "test_notebook_next.py")


if __name__ == "__main__":
    nb = execute(NOTEBOOK)
    nbformat.write(nb, NOTEBOOK)
    print(f"executed and saved {NOTEBOOK} ({os.path.getsize(NOTEBOOK)} bytes)")
