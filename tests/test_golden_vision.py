"""Image input against transformers 5.23 (golden/vision, scripts/export_golden_vision.py): the image
processor's patches (its PIL backend), each model's vision tower, M-RoPE positions, logits and hidden
states with one and with two images, greedy generation through the API, the CLI and the server; and
each detail done wrong moves the logits past what the comparison allows."""

import base64
import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import npqwen.primitives
import npqwen.vision.multimodal as MM
import npqwen.vision.tower as TW
from npqwen import load_model
from npqwen.generation import generate_steps
from npqwen.vision import load_image_processor
from npqwen.vision.tower import encode

from cli_inprocess import run_cli
from conftest import GOLDEN

VISION = os.path.join(GOLDEN, "vision")
TOL = 1e-4          # relative, as the text models' golden tests
MOVES = 1e-2        # a mistake must move the logits at least this much (the export checks its own)


def cases():
    return sorted(f[:-5] for f in os.listdir(VISION) if f.endswith(".json") and os.path.isdir(os.path.join(VISION, f[:-5])))


def meta(case):
    with open(os.path.join(VISION, f"{case}.json")) as f:
        return json.load(f)


_refs, _models = {}, {}


def ref(case):
    if case not in _refs:
        _refs[case] = load_file(os.path.join(VISION, f"{case}.safetensors"))
    return _refs[case]


def model(case, weights="float32"):
    if (case, weights) not in _models:
        _models[case, weights] = load_model(os.path.join(VISION, case), weights=weights)
    return _models[case, weights]


def rel(a, b):
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


def images(r, k):
    p = f"p{k}."
    return (r[p + "pixel_values"], r[p + "image_grid_thw"]) if p + "pixel_values" in r else (None, None)


def logits_at(r, k, logits):
    """The export keeps the logits at a few positions (the last token of each image, the last): the
    hidden states fix the rest (transformers' logits are the last of them times the LM head)."""
    return logits[:, r[f"p{k}.logits_positions"]]


def logits_error(case, m, k=2):
    r = ref(case)
    pv, grid = images(r, k)
    out = m.forward(r[f"p{k}.input_ids"], pixel_values=pv, image_grid_thw=grid)
    return rel(logits_at(r, k, out.logits), r[f"p{k}.logits"])


def test_every_model_is_covered():
    types = {meta(c)["model_type"] for c in cases()}
    assert types >= {"qwen3_5", "qwen3_5_moe", "qwen3_vl", "qwen3_vl_moe", "qwen2_5_vl", "qwen4_exp"}
    for c in cases():
        r = ref(c)
        assert r["p2.image_grid_thw"].shape[0] == 2                            # two images
        assert len(set(map(tuple, r["p2.image_grid_thw"][:, 1:].tolist()))) == 2   # of different sizes
    q25 = meta("qwen2_5_vl")
    assert "text_config" not in q25["config_json_top_level_keys"]            # the hub's flat form
    assert any(w.startswith("visual.") for w in q25["weight_name_prefixes"])
    assert max(meta(c)["prompts"][2]["windows"] for c in cases() if meta(c)["model_type"] == "qwen2_5_vl") > 1


# ---------------------------------------------------------------------------------------------
# the image processor


def preprocess_cases():
    with open(os.path.join(VISION, "preprocess.json")) as f:
        return json.load(f)


def _processors():
    d = preprocess_cases()
    out = {}
    for name, config in d["preprocessor_configs"].items():
        folder = os.path.join("/tmp", f"npqwen-preprocess-{name}-{os.getpid()}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
            json.dump(config, f)
        out[name] = load_image_processor(folder)
    return out


def test_patches_match_transformers_pil_backend():
    from PIL import Image
    d, want, procs = preprocess_cases(), load_file(os.path.join(VISION, "preprocess.safetensors")), _processors()
    modes = set()
    for e in d["entries"]:
        path = os.path.join(VISION, e["image"])
        given = {"path": path, "pil": Image.open(path) if e["mode"] == "pil" else None,
                 "array": np.asarray(Image.open(path)) if e["mode"] == "array" else None}[e["mode"]]
        pv, grid = procs[e["preprocessor"]]([given])
        key = e["key"] + "."
        np.testing.assert_array_equal(grid, want[key + "image_grid_thw"], err_msg=key)
        np.testing.assert_allclose(pv, want[key + "pixel_values"], atol=1e-5, rtol=0, err_msg=key)
        modes.add((os.path.splitext(os.path.basename(e["image"]))[0], e["mode"]))
    assert {("rgba", "pil"), ("palette", "pil"), ("exif", "pil"), ("rgb", "array"), ("exif", "path"),
            ("tiny", "path"), ("wide", "path"), ("big", "path"), ("gray", "path")} <= modes


# ---------------------------------------------------------------------------------------------
# the forward


@pytest.mark.parametrize("case", cases())
@pytest.mark.parametrize("k", [0, 1, 2])
def test_logits_and_hidden_states_match_transformers(case, k):
    r, m = ref(case), model(case)
    p = f"p{k}."
    pv, grid = images(r, k)
    out = m.forward(r[p + "input_ids"], pixel_values=pv, image_grid_thw=grid, output_hidden_states=True)
    assert rel(logits_at(r, k, out.logits), r[p + "logits"]) < TOL
    for i, (a, b) in enumerate(zip(out.hidden_states, r[p + "hidden_states"], strict=True)):
        assert rel(a, b) < TOL, f"hidden_states[{i}]"


@pytest.mark.parametrize("case", cases())
@pytest.mark.parametrize("k", [1, 2])
def test_tower_and_positions_match_transformers(case, k):
    r, m = ref(case), model(case)
    p = f"p{k}."
    pv, grid = images(r, k)
    out = encode(m.vision, pv, grid)
    assert rel(out.features, r[p + "image_embeds"]) < TOL
    if p + "deepstack" in r:
        assert len(out.deepstack) == len(r[p + "deepstack"]) > 0
        for a, b in zip(out.deepstack, r[p + "deepstack"]):
            assert rel(a, b) < TOL
    pads = r[p + "input_ids"] == m.config.image_token_id
    positions, delta = MM.rope_index(pads, None, grid, m.config.vision.spatial_merge_size)
    np.testing.assert_array_equal(positions, r[p + "position_ids"][-3:])
    np.testing.assert_array_equal(delta, r[p + "rope_deltas"].ravel())


@pytest.mark.parametrize("case", ["qwen3_5_vision", "qwen2_5_vl"])
def test_bf16_weights_match_transformers(case):
    assert logits_error(case, model(case, "bf16")) < TOL


def test_released_qwen3_vl_moe_experts_stored_in_out(tmp_path):
    """Qwen3-VL-MoE's hub files store the fused experts transposed, [E, d, 2i] and [E, i, d]; transformers
    reads either (transposing a tensor whose shape is not its own). So does npqwen: same logits."""
    src = os.path.join(VISION, "qwen3_vl_moe")
    dst = tmp_path / "released"
    dst.mkdir()
    for f in os.listdir(src):
        if f.endswith(".safetensors"):
            t = load_file(os.path.join(src, f))
            t = {k: np.ascontiguousarray(v.transpose(0, 2, 1)) if k.endswith(("experts.gate_up_proj",
                                                                              "experts.down_proj")) else v
                 for k, v in t.items()}
            save_file(t, str(dst / f))
        else:
            (dst / f).write_bytes(open(os.path.join(src, f), "rb").read())
    assert logits_error("qwen3_vl_moe", load_model(str(dst))) < TOL


# ---------------------------------------------------------------------------------------------
# generation: the API, the CLI, the server


@pytest.mark.parametrize("case", cases())
@pytest.mark.parametrize("k", [1, 2])
def test_greedy_generation_matches_transformers(case, k):
    r, m = ref(case), model(case)
    want = r[f"p{k}.generated"][0].tolist()
    pv, grid = images(r, k)
    got = [int(s[0]) for s in generate_steps(m, [r[f"p{k}.input_ids"][0].tolist()], len(want),
                                             eos_ids=[meta(case)["token_ids"]["eos"]], images=(pv, grid))]
    assert got == want[:len(got)] and (len(got) == len(want) or got[-1] == meta(case)["token_ids"]["eos"])


@pytest.mark.parametrize("case", ["qwen3_5_vision", "qwen3_vl", "qwen2_5_vl"])
def test_cli_chat_with_an_image_matches_transformers(case):
    """The user message [image, text], rendered by the checkpoint's template: transformers' processor
    and generate gave this text."""
    p = meta(case)["prompts"][1]
    parts = p["messages"][0]["content"]
    assert [x["type"] for x in parts] == ["image", "text"]
    status, out, err = run_cli(["--model", os.path.join(VISION, case), "--chat", "--temperature", "0",
                                "--max-new-tokens", str(len(p["generated"])),
                                "--image", os.path.join(VISION, parts[0]["path"]), parts[1]["text"]])
    assert status == 0, err
    assert out == p["generated_text"]


def test_server_image_url_matches_transformers():
    """Two images between texts, as data: URLs: the answer transformers gave."""
    pytest.importorskip("starlette")
    from serve_inprocess import running_server
    import urllib.error
    import urllib.request
    case = "qwen3_5_vision"
    p = meta(case)["prompts"][2]
    content = []
    for part in p["messages"][0]["content"]:
        if part["type"] == "text":
            content.append({"type": "text", "text": part["text"]})
        else:
            data = base64.b64encode(open(os.path.join(VISION, part["path"]), "rb").read()).decode()
            content.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}})
    body = {"model": "m", "messages": [{"role": "user", "content": content}], "temperature": 0,
            "max_tokens": len(p["generated"])}
    def post(url, body):
        req = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        try:
            return 200, json.loads(urllib.request.urlopen(req, timeout=120).read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    with running_server(model(case), os.path.join(VISION, case), model_id="m") as (url, _):
        status, answer = post(url, body)
        assert status == 200, answer
        assert answer["choices"][0]["message"]["content"] == p["generated_text"]
        broken = base64.b64encode(open(os.path.join(VISION, "images", "big.png"), "rb").read()[:300]).decode()
        content[1] = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{broken}"}}
        status, answer = post(url, body)
        assert status == 400 and answer["error"]["param"] == "messages[0].content[1]", answer
        assert "broken image" in answer["error"]["message"]


# ---------------------------------------------------------------------------------------------
# each detail done wrong is caught


def test_contiguous_sections_instead_of_interleaved_are_caught(monkeypatch):
    real = npqwen.primitives.mrope_cos_sin
    monkeypatch.setattr("npqwen.model.mrope_cos_sin",
                        lambda f, p, s, layout, scale=1.0: real(f, p, s, "contiguous" if layout == "interleaved"
                                                                else "interleaved", scale))
    for case in ("qwen3_5_vision", "qwen3_vl", "qwen2_5_vl"):
        assert logits_error(case, model(case)) > MOVES, case


def test_text_positions_for_image_tokens_are_caught(monkeypatch):
    real = MM.rope_index

    def flat(pads, mask, grid, m):
        pos, _ = real(pads, mask, grid, m)
        n = np.arange(pads.shape[1])
        return np.broadcast_to(n, pos.shape).copy(), np.zeros(len(pads), np.int64)
    monkeypatch.setattr(MM, "rope_index", flat)
    for case in cases():
        assert logits_error(case, model(case)) > MOVES, case


def test_position_grid_without_align_corners_is_caught(monkeypatch):
    def half_pixel(grid, side, m):   # align_corners=False: source = (index + 0.5) * side / size - 0.5
        g = np.asarray(grid)
        row, col = TW.patch_rows_cols(g, m)
        def taps(index, size):
            src = np.maximum((index + 0.5) * side / size - 0.5, 0).astype(np.float32)
            t = np.floor(src).astype(np.int64)[:, None] + np.arange(2)
            return np.clip(t, 0, side - 1), np.maximum(1 - np.abs(src[:, None] - t), 0)
        (ht, hw), (wt, ww) = taps(row, np.repeat(g[:, 1], g.prod(1))), taps(col, np.repeat(g[:, 2], g.prod(1)))
        return (ht[:, :, None] * side + wt[:, None, :]).reshape(-1, 4), (hw[:, :, None] * ww[:, None, :]).reshape(-1, 4)
    monkeypatch.setattr(TW, "interpolation_taps", half_pixel)
    for case in ("qwen3_5_vision", "qwen3_vl"):
        assert logits_error(case, model(case)) > MOVES, case


def test_dropping_deepstack_is_caught(monkeypatch):
    monkeypatch.setattr(MM.ImageInputs, "after_layer", lambda self, x, layer: x)
    assert logits_error("qwen3_vl", model("qwen3_vl")) > MOVES


def test_full_attention_instead_of_windows_is_caught(monkeypatch):
    real = TW.window_order

    def one_window(grid, cfg):
        order, _ = real(grid, cfg)
        return order, TW.image_segments(grid)    # (patches still reordered, but each image one segment)
    monkeypatch.setattr(TW, "window_order", one_window)
    assert logits_error("qwen2_5_vl", model("qwen2_5_vl")) > MOVES


def test_decoding_without_the_position_shift_is_caught(monkeypatch):
    """After an image, the next token sits at its index + delta (delta < 0 here): without the shift
    greedy decoding leaves transformers' tokens."""
    monkeypatch.setattr(MM, "rope_index", lambda *a, _real=MM.rope_index: (_real(*a)[0], np.zeros(1, np.int64)))
    moved = []
    for case in cases():
        r = ref(case)
        assert r["p2.rope_deltas"].item() != 0
        want = r["p2.generated"][0].tolist()
        got = [int(s[0]) for s in generate_steps(model(case), [r["p2.input_ids"][0].tolist()], len(want),
                                                 images=images(r, 2))]
        moved.append(got != want)
    assert any(moved)


def test_explain_image_prints_transformers_positions(capsys):
    """`explain --image` walks the chat transformers rendered as p1 (one image, then the text): every
    token's (t, h, w) it prints is transformers' position, and the image's grid and merge are shown."""
    import re
    from npqwen.explain import main
    case = "qwen3_5_vision"
    p = meta(case)["prompts"][1]
    parts = p["messages"][0]["content"]
    assert main(["--model", os.path.join(VISION, case), "--image", os.path.join(VISION, parts[0]["path"]),
                 parts[1]["text"]]) == 0
    out = capsys.readouterr().out
    r = ref(case)
    grid = r["p1.image_grid_thw"][0].tolist()
    assert f"grid: 1 frame x {grid[1]} x {grid[2]} patches" in out
    assert f"merged: {grid[1] // 2} x {grid[2] // 2} = {grid[1] * grid[2] // 4} tokens" in out
    shown = {int(m[1]): tuple(map(int, m[2:5])) for m in re.findall(r"^ +(\d+) .* \((\d+), (\d+), (\d+)\)$", out, re.M)
             for m in [(None,) + m]}
    pos = r["p1.position_ids"][:, 0]
    assert len(shown) == (r["p1.input_ids"] != meta(case)["token_ids"]["image_token_id"]).sum()
    for i, thw in shown.items():
        assert thw == tuple(pos[:, i].tolist()), i
