"""notebooks/vision_image_to_tokens.ipynb: how an image becomes tokens, executed on every run.

The notebook checks each step (resize, patches, merge, placeholders, M-RoPE positions) against
npqwen's own functions and, at the end, against transformers' outputs in golden/vision; a step that
disagrees raises inside the notebook and fails the run here. This file adds what a reader of the
stored copy relies on. `python tests/test_notebook_vision.py` re-executes it and saves its outputs.
"""

import os

import nbformat
import pytest

from test_notebook import ROOT, check_stored, execute, outputs

pytest.importorskip("PIL")   # the vision extra

NOTEBOOK = os.path.join(ROOT, "notebooks", "vision_image_to_tokens.ipynb")
CHECKS = (  # one line per comparison the notebook makes, each printed "...: matches"
    "the numbers against npqwen's load_image_processor",
    "against npqwen's smart_resize",
    "the scene resized to 96 x 64 against npqwen's ImageProcessor.pixels",
    "pixel_values against npqwen's ImageProcessor",
    "image_grid_thw (1 frame, 4 x 6 patches)",
    "the order against the tower's patch_rows_cols",
    "one vector per token",
    "the message against npqwen's user_message",
    "the prompt's ids against npqwen's encode_chat + expand_image_pads",
    "the positions against npqwen's rope_index",
    "rope_delta",
    "image_grid_thw against transformers",
    "pixel_values against transformers",
    "the prompt's ids against transformers' processor",
    "the positions against transformers' get_rope_index",
)


@pytest.fixture(scope="module")
def executed():
    return execute(NOTEBOOK)   # raises CellExecutionError, naming the cell, if a step disagrees


def test_the_notebook_runs_checks_every_step_and_draws_its_pictures(executed):
    assert not outputs(executed, "error")
    images = [o for o in outputs(executed, "display_data") if "image/png" in o.data]
    assert len(images) == 4  # the resize, the patches, the merge, the positions
    stderr = "".join(o.text for o in outputs(executed, "stream") if o.name == "stderr")
    assert "missing from" not in stderr and "Warning" not in stderr, stderr
    printed = "".join(o.text for o in outputs(executed, "stream") if o.name == "stdout")
    for what in CHECKS:
        assert f"{what}: matches" in printed, what
    assert printed.count(": matches") == 18   # smart_resize is checked on 4 sizes
    assert "<|vision_start|><|image_pad|><|vision_end|>Describe this." in printed
    assert "the text after it at 15 + max(2, 3) = 18, where its index is 21; rope_delta = -3" in printed


def test_the_stored_notebook_is_the_executed_one(executed):
    """Where notebooks are rendered without a kernel, each cell shows what it prints and draws today."""
    stored = check_stored(NOTEBOOK, executed, "test_notebook_vision.py")
    stored_text = ["".join(o.text for o in c.outputs if o.output_type == "stream") for c in stored.cells if c.cell_type == "code"]
    executed_text = ["".join(o.text for o in c.outputs if o.output_type == "stream")
                     for c in executed.cells if c.cell_type == "code"]
    assert stored_text == executed_text, "the stored printing is stale: python tests/test_notebook_vision.py"


if __name__ == "__main__":
    nbformat.write(execute(NOTEBOOK), NOTEBOOK)
    print(f"executed and saved {NOTEBOOK} ({os.path.getsize(NOTEBOOK)} bytes)")
