"""The small JSON files of a checkpoint folder besides config.json (generation_config.json,
tokenizer_config.json): read with one clear error for a file that is too large, not UTF-8, not
JSON or not a JSON object, and the checks their fields share, each error naming the file, the
field and what was found."""

import json
import math
import os

from .errors import NpqwenError

MAX_BYTES = 10_000_000  # these files are a few kB; anything this large is not one of them
JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
              bool: "true/false", type(None): "null"}


def read_json_object(path, default=None) -> dict:
    """The JSON object in `path`, or `default` when there is no such file."""
    if not os.path.isfile(path):
        return default
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise NpqwenError(f"{path}: cannot be read ({e.strerror})") from None
    if len(raw) > MAX_BYTES:
        raise NpqwenError(f"{path}: larger than {MAX_BYTES // 1_000_000} MB, not a {os.path.basename(path)}")
    try:
        d = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise NpqwenError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise NpqwenError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # an integer of thousands of digits, arrays nested 10^5 deep
        raise NpqwenError(f"{path}: not usable JSON ({str(e)[:120]})") from None
    if not isinstance(d, dict):
        raise NpqwenError(f"{path}: expected a JSON object, found {JSON_TYPES.get(type(d), type(d).__name__)}")
    return d


def shown(v, limit=80) -> str:
    """A found value for an error message: its repr, cut short (a field may hold a huge array)."""
    try:
        r = repr(v)
    except ValueError:  # an int too long to print
        return "a huge number"
    return r if len(r) <= limit else r[:limit - 3] + "..."


def is_number(x) -> bool:
    """A finite real number (JSON's NaN and Infinity, and true/false, are not)."""
    try:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    except OverflowError:  # an int too large for a float
        return False


def is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def token_ids(v, src, field, vocab_size) -> list[int]:
    """A field holding a token id or a list of them (transformers' eos_token_id), each inside the
    vocabulary [0, vocab_size). -> a list of ids (null -> [])."""
    if v is None:
        return []
    ids = v if isinstance(v, list) else [v]
    if not all(is_int(i) for i in ids):
        raise NpqwenError(f"{src}: field '{field}' must be a token id or a list of token ids, found {shown(v)}")
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise NpqwenError(f"{src}: field '{field}' holds token id {shown(bad[0])}, outside the model's "
                          f"vocabulary [0, {vocab_size})")
    return list(ids)
