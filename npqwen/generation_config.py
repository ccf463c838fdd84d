"""generation_config.json: a checkpoint's generation defaults, checked field by field.

The fields npqwen reads, with transformers' names and meanings (absent or null: the default):

    eos_token_id        a token id or a list of them, inside the vocabulary   (absent: config.json's)
    do_sample           true or false                                         false = greedy
    temperature         a number >= 0 (0 = greedy)                            1.0
    top_k               an integer >= 0 (0 = off)                             50
    top_p               a number in (0, 1]                                    1.0
    min_p               a number in [0, 1]                                    off
    repetition_penalty  a number > 0 (1 = off)                                1.0
    max_new_tokens      an integer >= 1                                       npqwen's 256

Any other field (bos_token_id, pad_token_id, transformers_version, ...) is not used, so not checked.
"""

import os
from dataclasses import dataclass

from .errors import NpqwenError
from .jsonfile import is_int, is_number, read_json_object, shown, token_ids
from .sampling import SamplingSettings

FILE = "generation_config.json"


@dataclass
class GenerationConfig:
    eos_token_id: list | None = None        # None: not in the file (config.json's apply); [] = no eos
    do_sample: bool = False
    temperature: float | None = None        # None: not in the file (transformers' default applies)
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    max_new_tokens: int | None = None


# field -> (check, what it must be)
_FIELDS = {
    "do_sample": (lambda v: isinstance(v, bool), "true or false"),
    "temperature": (lambda v: is_number(v) and v >= 0, "a number >= 0 (0 = greedy)"),
    "top_k": (lambda v: is_int(v) and v >= 0, "an integer >= 0 (0 = off)"),
    "top_p": (lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "min_p": (lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "repetition_penalty": (lambda v: is_number(v) and v > 0, "a number > 0 (1 = off)"),
    "max_new_tokens": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
}


def read_generation_config(folder, vocab_size: int) -> GenerationConfig:
    """The checkpoint's generation_config.json, checked (ids against the model's vocab_size); the
    defaults when the folder has none."""
    path = os.path.join(folder, FILE)
    return parse_generation_config(read_json_object(path, {}), path, vocab_size)


def parse_generation_config(d: dict, src: str, vocab_size: int) -> GenerationConfig:
    values = {}
    for field, (ok, must) in _FIELDS.items():
        v = d.get(field)
        if v is not None and not ok(v):
            raise NpqwenError(f"{src}: field '{field}' must be {must}, found {shown(v)}")
        values[field] = v
    values["do_sample"] = bool(values["do_sample"])
    if "eos_token_id" in d:
        values["eos_token_id"] = token_ids(d["eos_token_id"], src, "eos_token_id", vocab_size)
    return GenerationConfig(**values)


def eos_token_ids(config, generation_config: GenerationConfig | None = None) -> list[int]:
    """The end-of-sequence ids: generation_config.json's eos_token_id (an id or a list), else config.json's."""
    if generation_config is not None and generation_config.eos_token_id is not None:
        return generation_config.eos_token_id
    return token_ids(config.eos_token_id, "config.json", "eos_token_id", config.vocab_size)


def default_settings(g: GenerationConfig, do_sample: bool | None = None) -> SamplingSettings:
    """Sampling settings as transformers derives them from generation_config.json: greedy unless
    do_sample (the file's, unless given) is true; then temperature 1.0, top-k 50, top-p 1.0 and no
    min-p unless the file says otherwise. The repetition penalty applies either way."""
    rp = 1.0 if g.repetition_penalty is None else g.repetition_penalty
    if not (g.do_sample if do_sample is None else do_sample):
        return SamplingSettings(temperature=0.0, repetition_penalty=rp)
    pick = lambda v, default: default if v is None else v  # noqa: E731
    return SamplingSettings(temperature=pick(g.temperature, 1.0), top_k=pick(g.top_k, 50),
                            top_p=pick(g.top_p, 1.0), min_p=pick(g.min_p, 0.0), repetition_penalty=rp)
