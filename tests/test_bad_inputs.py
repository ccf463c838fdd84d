"""Every bad input in tests/bad_inputs.py gets one clear error naming what is wrong, and the README
shows what each gets (regenerate with `python tests/bad_inputs.py` when a message changes)."""

import os

import pytest

from bad_inputs import CASES, ROOT, outcome


@pytest.mark.parametrize("what,fn,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(what, fn, expected):
    msg = outcome(fn)
    assert expected in msg, msg
    assert "Traceback" not in msg


def test_readme_table_is_current():
    from bad_inputs import table
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert table() in readme, "README's bad-input table is stale: run `python tests/bad_inputs.py`"
