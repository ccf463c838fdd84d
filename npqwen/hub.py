"""Models named the way every tool names them: a folder, or a hub id such as
"Qwen/Qwen2.5-0.5B-Instruct".

    --model NAME [--revision REV] -> a local folder:
      NAME exists on disk          -> NAME itself (as transformers' from_pretrained, a folder wins)
      NAME is a hub id             -> the snapshot folder in huggingface_hub's cache
                                      (HF_HOME / HF_HUB_CACHE), downloading what is missing unless
                                      HF_HUB_OFFLINE is set; REV picks a branch, tag or commit

A download fetches only the files npqwen reads: config.json, generation_config.json, the tokenizer
files, the safetensors index and the shards it names (or model.safetensors), never a pickle
(*.bin, *.pt, *.pth). huggingface_hub's own errors name neither the id nor the revision; here every
failure is one NpqwenError that names both.
"""

import json
import os

from .errors import NpqwenError

# What npqwen reads from a checkpoint folder, besides the weights (tokenizer.py, generation_config.py, config.py).
SMALL_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "chat_template.jinja", "model.safetensors.index.json"]
CONFIG_ONLY = ["config.json"]


def add_revision_option(parser):
    parser.add_argument("--revision", help="with a hub id as --model: the branch, tag or commit (default: main)")


def resolve_model(name: str, revision: str | None = None, files=None, cache_dir=None) -> str:
    """-> the local path of --model NAME: NAME itself when it exists on disk, else the cached snapshot
    of hub id NAME at `revision`. files: CONFIG_ONLY for commands that read only config.json; by
    default, everything a checkpoint needs. cache_dir: default huggingface_hub's (HF_HUB_CACHE)."""
    if os.path.exists(name):
        if revision is not None:
            raise NpqwenError(f"--revision {revision}: --model {_shown(name)} is a local path; a revision selects "
                              f"a branch, tag or commit of a hub id")
        return name
    if not is_hub_id(name):
        raise NpqwenError(f"--model {_shown(name)}: no such folder")
    folder = _snapshot(name, revision, files or SMALL_FILES, cache_dir)
    if files is None:  # the weights: the shards the index names, else model.safetensors
        folder = _snapshot(name, revision, _weight_files(folder), cache_dir)
    return folder


def is_hub_id(name: str) -> bool:
    """"owner/name" or "name" as the hub spells repository ids (no path syntax such as /x, ./x, a/b/c)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _weight_files(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    if not os.path.isfile(index):
        return ["model.safetensors"]
    try:
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []  # the loader names what is wrong with the index
    return [s for s in shards if isinstance(s, str) and s.endswith(".safetensors")]


def _snapshot(repo_id, revision, files, cache_dir):
    """huggingface_hub's snapshot_download of exactly these files, its errors named for this id and revision."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, IncompleteSnapshotError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)

    cache = cache_dir or constants.HF_HUB_CACHE
    offline = constants.is_offline_mode()
    what = f"--model {repo_id}" + (f" --revision {revision}" if revision else "")
    try:
        return snapshot_download(repo_id, revision=revision, cache_dir=cache, allow_patterns=files,
                                 local_files_only=offline)
    except RevisionNotFoundError:
        raise NpqwenError(f"{what}: the hub has no revision {revision!r} of {repo_id} (a branch, tag or "
                          f"commit)") from None
    except GatedRepoError:
        raise NpqwenError(f"{what}: {repo_id} is gated on the hub: accept its terms there and log in "
                          f"(hf auth login)") from None
    except RepositoryNotFoundError:
        raise NpqwenError(f"{what}: the hub has no model {repo_id} (or it is private: log in with "
                          f"hf auth login)") from None
    except IncompleteSnapshotError as e:
        raise NpqwenError(f"{what}: the cached snapshot is incomplete and the hub cannot be reached "
                          f"({_first_line(e)})") from None
    except LocalEntryNotFoundError as e:
        raise NpqwenError(f"{what}: {_not_cached(repo_id, revision, cache)}, and "
                          + ("HF_HUB_OFFLINE is set, so nothing is downloaded" if offline else
                             f"the hub could not be reached ({_first_line(e.__cause__ or e)})")) from None
    except HfHubHTTPError as e:
        raise NpqwenError(f"{what}: the hub answered {_first_line(e)}") from None
    except OSError as e:  # a cache folder that cannot be written, a full disk
        raise NpqwenError(f"{what}: {e.strerror or e} ({getattr(e, 'filename', None) or cache})") from None


def _not_cached(repo_id, revision, cache):
    """Which part is missing from the cache: the whole model, or this revision of it."""
    repo = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    if not os.path.isdir(os.path.join(repo, "snapshots")):
        return f"not a folder, and not in the hub cache {cache}"
    known = sorted(os.listdir(os.path.join(repo, "refs"))) if os.path.isdir(os.path.join(repo, "refs")) else []
    known += sorted(os.listdir(os.path.join(repo, "snapshots")))
    return (f"revision {revision or 'main'!r} is not in the hub cache {cache} (cached: "
            f"{', '.join(known) or 'nothing'})")


def _first_line(e):
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _shown(text):
    from .cli import _printable  # (cli imports this module)
    return _printable(text)
