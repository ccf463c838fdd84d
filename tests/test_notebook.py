"""notebooks/qwen2_walkthrough.ipynb: executed top to bottom on every run, so it never goes stale.

The notebook checks each of its steps against model.forward itself (a wrong step raises inside the
notebook and fails the run here); this file adds what a reader of the stored copy relies on.
`python tests/test_notebook.py` re-executes the notebook and saves it with its outputs.
"""

import os
import sys

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "qwen2_walkthrough.ipynb")
MAX_BYTES = 400_000


def execute(path=NOTEBOOK):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(path)}}).execute()
    for cell in nb.cells:  # a cell's printing arrives in chunks that depend on timing: one output per stream
        merged = []
        for o in cell.get("outputs", []):
            if merged and o.output_type == "stream" and merged[-1].output_type == "stream" and merged[-1].name == o.name:
                merged[-1].text += o.text
            else:
                merged.append(o)
        if cell.cell_type == "code":
            cell.outputs = merged
    return nb


def outputs(nb, kind):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == kind]


def shape(nb):  # per code cell, the kinds of output it shows (not their content, which may vary)
    return [[(o.output_type, o.get("name"), sorted(o.get("data", {}))) for o in c.outputs]
            for c in nb.cells if c.cell_type == "code"]


@pytest.fixture(scope="module")
def executed():
    return execute()  # raises CellExecutionError, naming the cell, if a step disagrees with model.forward


def test_the_notebook_runs_and_draws_its_pictures(executed):
    images = [o for o in outputs(executed, "display_data") if "image/png" in o.data]
    assert len(images) == 2  # the logit lens and the attention maps
    stderr = "".join(o.text for o in outputs(executed, "stream") if o.name == "stderr")
    assert "missing from" not in stderr and "Warning" not in stderr, stderr
    printed = "".join(o.text for o in outputs(executed, "stream") if o.name == "stdout")
    assert printed.count(": matches") >= 10  # every check the notebook makes reported back
    assert "学习如逆水行舟,不进则退" in printed


def check_stored(path, executed, script):
    """The stored notebook at `path` is `executed` as saved by `python tests/<script>`: the same cells,
    the same kinds of output, run top to bottom once, and small. -> the stored notebook."""
    stored = nbformat.read(path, as_version=4)
    nbformat.validate(stored)
    assert [c.source for c in stored.cells] == [c.source for c in executed.cells]
    assert shape(stored) == shape(executed), f"the stored outputs are stale: python tests/{script}"
    code = [c for c in stored.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "executed top to bottom, once"
    assert os.path.getsize(path) < MAX_BYTES
    return stored


def test_the_stored_notebook_is_the_executed_one(executed):
    """Where notebooks are rendered without a kernel, each cell shows what it prints and draws today."""
    check_stored(NOTEBOOK, executed, "test_notebook.py")


if __name__ == "__main__":
    nb = execute(sys.argv[1] if len(sys.argv) > 1 else NOTEBOOK)
    nbformat.write(nb, sys.argv[1] if len(sys.argv) > 1 else NOTEBOOK)
    print(f"executed and saved {NOTEBOOK} ({os.path.getsize(NOTEBOOK)} bytes)")
