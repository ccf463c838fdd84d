"""Hub ids for --model: resolved through huggingface_hub's cache, built here in a temporary folder in
its own layout (blobs, snapshots, refs), offline: this machine reaches no hub. Every command that
takes --model is run as a user runs it, in a subprocess with HF_HUB_CACHE and HF_HUB_OFFLINE set."""

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

from conftest import CHECKPOINTS, ROOT
from npqwen.errors import NpqwenError
from npqwen.hub import CONFIG_ONLY, is_hub_id, resolve_model

DEMO = os.path.join(CHECKPOINTS, "demo")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OLD_COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


def make_cache(root, repo_id="Acme/Demo-Chat", source=DEMO, commit=COMMIT, refs=("main",), files=None):
    """A hub cache as huggingface_hub writes it: each file stored once under blobs/<sha256>, each
    snapshot a folder of relative symlinks into blobs, each branch or tag a refs/<name> file
    holding its commit hash."""
    repo = os.path.join(root, "models--" + repo_id.replace("/", "--"))
    snap = os.path.join(repo, "snapshots", commit)
    os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
    os.makedirs(snap, exist_ok=True)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    for name in files or sorted(os.listdir(source)):
        with open(os.path.join(source, name), "rb") as f:
            blob = hashlib.sha256(f.read()).hexdigest()
        shutil.copyfile(os.path.join(source, name), os.path.join(repo, "blobs", blob))
        os.symlink(os.path.join("..", "..", "blobs", blob), os.path.join(snap, name))
    for ref in refs:
        with open(os.path.join(repo, "refs", ref), "w") as f:
            f.write(commit)
    return snap


def run(module, *args, cache, offline=True):
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1" if offline else "0",
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    make_cache(root, commit=COMMIT, refs=("main", "v1.0"))
    # an older revision whose config has a wider MLP: the revision picks which files are read
    old = tmp_path_factory.mktemp("old")
    for name in os.listdir(DEMO):
        shutil.copyfile(os.path.join(DEMO, name), os.path.join(old, name))
    with open(os.path.join(old, "config.json")) as f:
        text = f.read()
    with open(os.path.join(old, "config.json"), "w") as f:
        f.write(text.replace('"intermediate_size": 512', '"intermediate_size": 1024'))
    make_cache(root, commit=OLD_COMMIT, refs=("old-branch",), source=str(old), files=["config.json"])
    return root


def test_generate_from_a_hub_id_equals_the_folder(cache):
    prompt = ["--temperature", "0", "--max-new-tokens", "12", "Once upon a time"]
    by_folder = run("npqwen.generate", "--model", DEMO, *prompt, cache=cache)
    by_id = run("npqwen.generate", "--model", "Acme/Demo-Chat", *prompt, cache=cache)
    by_tag = run("npqwen.generate", "--model", "Acme/Demo-Chat", "--revision", "v1.0", *prompt, cache=cache)
    by_commit = run("npqwen.generate", "--model", "Acme/Demo-Chat", "--revision", COMMIT, *prompt, cache=cache)
    assert by_folder.returncode == 0 and by_folder.stdout, by_folder.stderr
    for r in (by_id, by_tag, by_commit):
        assert (r.returncode, r.stdout) == (0, by_folder.stdout), r.stderr
        assert os.path.join("snapshots", COMMIT) in r.stderr   # the summary line names the snapshot read


def test_every_command_accepts_a_hub_id(cache):
    r = run("npqwen.info", "--model", "Acme/Demo-Chat", cache=cache)
    assert r.returncode == 0 and "MLP 512," in r.stdout, r.stderr
    r = run("npqwen.info", "--model", "Acme/Demo-Chat", "--revision", "old-branch", cache=cache)
    assert r.returncode == 0 and "MLP 1024," in r.stdout, r.stderr  # that revision's config.json
    r = run("npqwen.forward", "--model", "Acme/Demo-Chat", "--ids", "1 2 3", cache=cache)
    direct = run("npqwen.forward", "--model", DEMO, "--ids", "1 2 3", cache=cache)
    assert r.returncode == 0 and r.stdout == direct.stdout and r.stdout, r.stderr
    r = run("npqwen.explain", "--model", "Acme/Demo-Chat", "Once upon", cache=cache)
    assert r.returncode == 0 and "logit lens" in r.stdout.lower(), r.stderr


def test_missing_revision_names_the_id_the_revision_and_what_is_cached(cache):
    r = run("npqwen.generate", "--model", "Acme/Demo-Chat", "--revision", "v2.0", "hi", cache=cache)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: --model Acme/Demo-Chat --revision v2.0:")
    assert "'v2.0' is not in the hub cache" in r.stderr and "v1.0" in r.stderr and "HF_HUB_OFFLINE" in r.stderr
    assert "Traceback" not in r.stderr


def test_not_in_cache_while_offline(cache):
    r = run("npqwen.generate", "--model", "Acme/Other-Model", "hi", cache=cache)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "Acme/Other-Model" in r.stderr and "not in the hub cache" in r.stderr and str(cache) in r.stderr
    assert "HF_HUB_OFFLINE is set" in r.stderr


def test_a_snapshot_lacking_weights_is_named_by_the_loader(tmp_path):
    make_cache(tmp_path, "Acme/No-Weights", files=["config.json", "tokenizer.json", "tokenizer_config.json"])
    r = run("npqwen.generate", "--model", "Acme/No-Weights", "hi", cache=tmp_path)
    assert r.returncode == 2 and "no model.safetensors" in r.stderr and "Acme--No-Weights" in r.stderr, r.stderr


def test_resolution_in_process(cache, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    folder = resolve_model("Acme/Demo-Chat", cache_dir=str(cache))
    assert folder.endswith(os.path.join("snapshots", COMMIT)) and os.path.isfile(os.path.join(folder, "config.json"))
    assert resolve_model("Acme/Demo-Chat", "old-branch", files=CONFIG_ONLY, cache_dir=str(cache)).endswith(OLD_COMMIT)
    assert resolve_model(DEMO) == DEMO                        # a folder is a folder
    with pytest.raises(NpqwenError, match="is a local path"):
        resolve_model(DEMO, revision="main")
    with pytest.raises(NpqwenError, match="no such folder"):
        resolve_model("/no/such/dir")                         # not an id: no hub look-up at all


def test_what_is_a_hub_id():
    assert is_hub_id("Qwen/Qwen2.5-0.5B-Instruct") and is_hub_id("gpt2")
    for name in ("/abs/path", "./rel", "a/b/c", "a//b", "../x", "x\ny", "", "a" * 200):
        assert not is_hub_id(name), name


# ---------------------------------------------------------------------------------------------
# a download, from a hub that answers on 127.0.0.1 in the hub's own protocol (a few endpoints)

def fake_hub(files, repo_id, commit, asked):
    """A Starlette app serving `files` {name: bytes} as repo_id at commit; records each file downloaded."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    def info(request):
        return JSONResponse({"id": repo_id, "sha": commit, "siblings": [{"rfilename": f} for f in files]})

    def tree(request):
        return JSONResponse([{"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                             for f, b in files.items()])

    def resolve(request):
        name = request.path_params["file"]
        if name not in files:
            return Response(status_code=404, headers={"X-Error-Code": "EntryNotFound"})
        if request.method == "GET":
            asked.append(name)
        body = files[name]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(body).hexdigest()}"',
                   "Content-Length": str(len(body))}
        return Response(body if request.method == "GET" else b"", headers=headers)

    return Starlette(routes=[Route(f"/api/models/{repo_id}/revision/{{rev}}", info),
                             Route(f"/api/models/{repo_id}/tree/{{rest:path}}", tree),
                             Route(f"/{repo_id}/resolve/{{rev}}/{{file:path}}", resolve, methods=["GET", "HEAD"])])


def test_a_download_fetches_only_what_npqwen_reads(tmp_path):
    pytest.importorskip("uvicorn")
    import threading
    import time
    import uvicorn
    from npqwen.serve import listen

    source = os.path.join(CHECKPOINTS, "mqa_bf16_sharded")
    files = {name: open(os.path.join(source, name), "rb").read() for name in os.listdir(source)}
    files.update({"pytorch_model.bin": b"a pickle", "original/consolidated.pth": b"another pickle",
                  "model-00011-of-00010.safetensors": b"a shard the index does not name", "README.md": b"# x",
                  "onnx/model.onnx": b"onnx"})
    asked = []
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(fake_hub(files, "Acme/Sharded", COMMIT, asked), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        env = dict(os.environ, HF_HUB_CACHE=str(tmp_path), HF_HUB_OFFLINE="0", HF_HUB_DISABLE_TELEMETRY="1",
                   HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_XET="1",
                   HF_ENDPOINT=f"http://127.0.0.1:{sock.getsockname()[1]}")
        r = subprocess.run([sys.executable, "-m", "npqwen.forward", "--model", "Acme/Sharded", "--ids", "1 2 3"],
                           capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    finally:
        server.should_exit = True
        thread.join(30)
    direct = run("npqwen.forward", "--model", source, "--ids", "1 2 3", cache=tmp_path)
    assert r.returncode == 0 and r.stdout == direct.stdout, r.stderr
    wanted = {"config.json", "generation_config.json", "model.safetensors.index.json"} | {
        f"model-{i:05d}-of-00010.safetensors" for i in range(1, 11)}
    assert sorted(asked) == sorted(wanted)                   # no pickle, no stray shard, nothing else
    snap = os.path.join(tmp_path, "models--Acme--Sharded", "snapshots", COMMIT)
    assert set(os.listdir(snap)) == wanted


def test_not_in_cache_and_the_hub_unreachable(tmp_path):
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path), HF_HUB_OFFLINE="0", HF_HUB_DISABLE_TELEMETRY="1",
               HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_ETAG_TIMEOUT="5")   # a closed loopback port: refused at once
    r = subprocess.run([sys.executable, "-m", "npqwen.generate", "--model", "Acme/Demo-Chat", "hi"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: --model Acme/Demo-Chat: not a folder, and not in the hub cache")
    assert "the hub could not be reached" in r.stderr
