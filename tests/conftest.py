import json
import os

import pytest
from hypothesis import settings

# Property tests must not depend on how busy the machine is: Hypothesis's default deadline (200 ms an
# example) fails a test whose example ran slowly under load, so no test has one. Under CI the examples
# are derived from each test's name, not drawn at random, so that a run can be repeated exactly.
settings.register_profile("npqwen", deadline=None, derandomize=os.environ.get("CI") == "true", print_blob=True)
settings.load_profile("npqwen")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "golden")
CHECKPOINTS = os.path.join(GOLDEN, "checkpoints")
REFERENCES = os.path.join(GOLDEN, "references")
SHARED = os.path.join(ROOT, "..", "shared", "assets", "qwen2")


def golden_cases():
    """Every golden model: a references/<case>.safetensors with its checkpoint under checkpoints/<case>."""
    return sorted(f[:-12] for f in os.listdir(REFERENCES)
                  if f.endswith(".safetensors") and os.path.isdir(os.path.join(CHECKPOINTS, f[:-12])))


def golden_meta(case):
    with open(os.path.join(REFERENCES, f"{case}.json")) as f:
        return json.load(f)


_models = {}


def golden_model(case):
    """Load each golden checkpoint once per test session."""
    from npqwen import load_model
    if case not in _models:
        _models[case] = load_model(os.path.join(CHECKPOINTS, case))
    return _models[case]


def shared_asset(*parts):
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        pytest.skip(f"../shared/assets/qwen2 is not beside this checkout ({path} missing)")
    return path


def scoring_meta():
    """What scripts/export_score_golden.py recorded: the settings and transformers' perplexities."""
    with open(os.path.join(REFERENCES, "scoring.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def scoring_ref():
    """scripts/export_score_golden.py's arrays: transformers' per-token log-probabilities and more."""
    from safetensors.numpy import load_file
    return load_file(os.path.join(REFERENCES, "scoring.safetensors"))


# No test reaches a hub (this machine has no network to one): hub ids resolve from local caches only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
