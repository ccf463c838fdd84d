"""npqwen.plots and `explain --plot`: legible labels for any prompt, with the system's CJK font, with
npqwen's bundled one and with none, and the panels a learner expects (logit-lens grid, attention
maps, which kv head each head reads)."""

import io
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from matplotlib.text import Text

from conftest import CHECKPOINTS, ROOT, golden_model, shared_asset
from npqwen.cli import DEMO_MODEL
from npqwen.explain import pictures, walk
from npqwen.model import load_model
from npqwen.plots import (BUNDLED_FAMILY, BUNDLED_FONT, LATIN_FONT, figure, find_fonts, gqa_panel, token_bytes,
                          token_label)
from npqwen.tokenizer import Tokenizer
from npqwen.weights import open_checkpoint

SEED_PROMPT = "学习如逆水行舟,不进则"
PROVERB = SEED_PROMPT + "退"
ENGLISH = "Once upon a time, there was a little bird that wanted to"
SEEDS = os.path.join(ROOT, "..", "shared", "seeds")
LEVEL1 = os.path.join(ROOT, "scripts", "data", "tongyong_guifan_level1.txt")


@pytest.fixture(scope="module")
def demo():
    return load_model(DEMO_MODEL), open_checkpoint(DEMO_MODEL), Tokenizer(DEMO_MODEL)


def no_cjk_font():
    return find_fonts(candidates=(), bundled=False)  # no CJK font at all, not even npqwen's


def bundled_font():
    # a machine whose fonts include none of the CJK fonts plots.py knows: npqwen's own subset is used
    return find_fonts(candidates=("No Such CJK Font",))


def cjk_font():
    fonts = find_fonts()
    if not fonts.cjk:
        pytest.skip("no CJK font on this machine (CI installs fonts-noto-cjk; apt-get install fonts-noto-cjk)")
    return fonts


FONTS = {"cjk font": cjk_font, "bundled cjk font": bundled_font, "no cjk font": no_cjk_font}


def texts(fig):
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def draw(demo, prompt, fonts, layers=(0, 3), heads=(0, 4)):
    model, tensors, tok = demo
    ids = tok.encode(prompt)
    r = walk(model, tensors, ids)
    fig = figure(pictures(model.config, tensors, r, ids, tok, fonts, list(layers), list(heads)), fonts)
    return fig, r, ids


# ---------------------------------------------------------------------------------------------
# labels


def test_labels_without_a_cjk_font_are_ids_and_bytes(demo):
    tok, fonts = demo[2], no_cjk_font()
    assert not fonts.cjk and ord("学") not in fonts.charset
    xue = tok.encode("学")[0]
    assert token_label(tok, xue, fonts) == f"#{xue} \\xe5\\xad\\xa6"       # its id and UTF-8 bytes
    assert token_label(tok, xue, fonts, max_chars=8) == f"#{xue}"          # no room: the id alone
    assert token_label(tok, tok.encode(" little")[0], fonts) == "\u2423little"  # a leading space, visible


@pytest.mark.parametrize("fonts", ["cjk font", "bundled cjk font"])
def test_labels_with_a_cjk_font_are_the_text(demo, fonts):
    tok, fonts = demo[2], FONTS[fonts]()
    assert [token_label(tok, i, fonts) for i in tok.encode(PROVERB)] == list(PROVERB)


@pytest.mark.parametrize("fonts", FONTS)
def test_a_token_that_is_part_of_a_character_shows_its_bytes(demo, fonts):
    tok = demo[2]
    ids = tok.encode("炊")  # three UTF-8 bytes that the demo's BPE splits 2 + 1
    assert b"".join(token_bytes(tok, i) for i in ids) == "炊".encode()
    assert [token_label(tok, i, FONTS[fonts]()) for i in ids] == ["\\xe7\\x82", "\\x8a"]


def test_long_labels_are_cut_between_characters(demo):
    tok, fonts = demo[2], no_cjk_font()
    i = tok.encode(" defaults")[0]
    label = token_label(tok, i, fonts, max_chars=6)
    assert label.endswith("\u2026") and len(label) <= 6 and "\u2423defaults".startswith(label[:-1])
    stray = tok.encode("炊")[0]  # two stray bytes: cut after a whole escape, not inside one
    assert token_label(tok, stray, fonts, max_chars=6) == "\\xe7\u2026"


# ---------------------------------------------------------------------------------------------
# the bundled CJK font (npqwen/fonts, built by scripts/make_cjk_font.py)


def charmap(path):
    from matplotlib.ft2font import FT2Font
    return set(FT2Font(path).get_charmap())


def glyph_warnings(text, families):  # matplotlib's "Glyph ... missing from font(s)" when drawing text
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4, 1))
    fig.text(0.05, 0.5, text, fontfamily=families)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(io.BytesIO(), format="png", dpi=40)
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def seed_texts():  # every seed document that is text (the folder may hold anything)
    if not os.path.isdir(SEEDS):
        pytest.skip(f"no seed documents beside this checkout ({SEEDS})")
    texts = {}
    for name in sorted(os.listdir(SEEDS)):
        try:
            with open(os.path.join(SEEDS, name), encoding="utf-8") as f:
                texts[name] = f.read()
        except (OSError, UnicodeDecodeError):   # a folder, an unreadable file, a picture
            pass
    return texts


def test_without_a_system_cjk_font_the_bundled_font_is_chosen():
    from matplotlib import font_manager as fm
    fonts = bundled_font()
    assert fonts.families == [LATIN_FONT, BUNDLED_FAMILY] and fonts.cjk and fonts.bundled
    # matplotlib resolves the family to npqwen's file, and draws the proverb with it, every glyph there
    assert fm.findfont(fm.FontProperties(family=BUNDLED_FAMILY), fallback_to_default=False) == BUNDLED_FONT
    assert {ord(ch) for ch in PROVERB} <= fonts.charset
    assert glyph_warnings(PROVERB, fonts.families) == []
    # the capture works: the same text with matplotlib's own font alone is reported missing
    assert len(glyph_warnings(PROVERB, [LATIN_FONT])) == len(set(PROVERB) - {","})
    # and the bundled font's name is its own: a full Noto Sans CJK SC, where installed, stays first
    system = find_fonts()
    assert not system.bundled or system.families == [LATIN_FONT, BUNDLED_FAMILY]


def test_the_bundled_font_covers_level1_the_seeds_and_the_demo_vocabulary(demo):
    has = charmap(BUNDLED_FONT)
    with open(LEVEL1, encoding="utf-8") as f:
        level1 = [ch for line in f if not line.startswith("#") for ch in line.strip()]
    assert len(level1) == len(set(level1)) == 3500 and level1[:5] == list("一乙二十丁") and level1[-1] == "矗"
    assert [ch for ch in level1 if ord(ch) not in has] == []
    assert [ch for ch in PROVERB + "，。！？、：；“”‘’（）《》\u2423\u2026" if ord(ch) not in has] == []
    for name, text in seed_texts().items():
        lacking = sorted({ch for ch in text if ch.isprintable() and ord(ch) not in has})
        assert lacking == [], f"{name}: {lacking} not in the bundled font; rebuild it (scripts/make_cjk_font.py)"
    tok = demo[2]
    vocab = set()
    for i in range(tok.tok.get_vocab_size(with_added_tokens=True)):
        vocab.update(token_bytes(tok, i).decode("utf-8", errors="ignore"))
    assert sorted(ch for ch in vocab if ch.isprintable() and ord(ch) not in has) == []


def test_a_character_outside_the_bundled_font_still_gets_its_escaped_label():
    from npqwen.tokenizer import Tokenizer
    tok, fonts = Tokenizer(os.path.dirname(shared_asset("tokenizer.json"))), bundled_font()
    xin = tok.encode("鑫")  # one token in Qwen2's vocabulary; level 2 of the table, not in the subset
    assert len(xin) == 1 and ord("鑫") not in fonts.charset and glyph_warnings("鑫", fonts.families)
    assert token_label(tok, xin[0], fonts) == f"#{xin[0]} \\xe9\\x91\\xab"
    assert "".join(token_label(tok, i, fonts) for i in tok.encode(PROVERB)) == PROVERB  # (学习 is one token)


def test_the_font_is_small_ships_with_its_license_and_is_package_data():
    tomllib = pytest.importorskip("tomllib")
    assert os.path.getsize(BUNDLED_FONT) <= 2 * 1024 * 1024
    with open(os.path.join(os.path.dirname(BUNDLED_FONT), "OFL.txt"), encoding="utf-8") as f:
        license = f.read()
    assert "SIL OPEN FONT LICENSE Version 1.1" in license and "Adobe" in license and "TERMINATION" in license
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        data = tomllib.load(f)["tool"]["setuptools"]["package-data"]["npqwen"]
    from pathlib import Path
    shipped = {p.name for pattern in data for p in Path(ROOT, "npqwen").glob(pattern)}
    assert {os.path.basename(BUNDLED_FONT), "OFL.txt"} <= shipped


def test_the_seed_prompt_plot_without_a_system_cjk_font(demo, tmp_path):
    """explain --plot on the seed prompt, run as on a machine with no CJK font (find_fonts told that
    none of the system's fonts is one): nothing on stderr (no "Glyph missing" warning, no "findfont"
    log line), and every token label is the proverb's own character."""
    png = tmp_path / "seed.png"
    no_system_cjk = ("import sys, npqwen.plots as p; p.find_fonts.__defaults__ = (('No Such CJK Font',), True); "
                     "from npqwen.explain import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", no_system_cjk, "--plot", str(png), SEED_PROMPT], cwd=ROOT,
                       capture_output=True, timeout=300)
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model, tensors, tok = demo
    ids = tok.encode(SEED_PROMPT)
    fonts = bundled_font()
    fig = figure(pictures(model.config, tensors, walk(model, tensors, ids), ids, tok, fonts, [0, 3], [0, 4]), fonts)
    axes = [ax for ax in fig.axes if ax.get_title().startswith(("logit lens", "layer "))]
    assert len(axes) == 5 and all([t.get_text() for t in ax.get_xticklabels()] == list(SEED_PROMPT) for ax in axes)


# ---------------------------------------------------------------------------------------------
# pictures


@pytest.mark.parametrize("prompt", [SEED_PROMPT, ENGLISH], ids=["seed prompt", "english prompt"])
@pytest.mark.parametrize("fonts", FONTS)
def test_every_label_in_the_pictures_has_glyphs(demo, prompt, fonts, tmp_path):
    fonts = FONTS[fonts]()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig, r, ids = draw(demo, prompt, fonts)
        fig.savefig(tmp_path / "p.png", dpi=50)
    assert not [w for w in caught if "missing from" in str(w.message)], [str(w.message) for w in caught]
    for text in texts(fig):  # nothing that would be drawn as an empty box
        assert all(ord(ch) in fonts.charset or ch == "\n" for ch in text), text


@pytest.mark.parametrize("fonts", FONTS)
def test_the_logit_lens_grid(demo, fonts):
    fonts = FONTS[fonts]()
    model, _, tok = demo
    fig, r, ids = draw(demo, SEED_PROMPT, fonts)
    n, t = model.config.num_hidden_layers, len(ids)
    lens = [ax for ax in fig.axes if ax.get_title().startswith("logit lens")]
    assert len(lens) == 1
    ax = lens[0]
    # layers x positions: the embedding and every layer, by every prompt position, one token per cell
    assert [lab.get_text() for lab in ax.get_yticklabels()][0] == "embedding" and len(ax.get_yticks()) == n + 1
    assert len(ax.get_xticks()) == t
    cells = [c.get_text() for c in ax.texts]
    assert len(cells) == (n + 1) * t
    # the top row is the model's own prediction at each position, coloured by its probability
    out = model.forward(np.array([ids]))
    assert cells[-t:] == [token_label(tok, i, fonts, max_chars=8) for i in out.logits[0].argmax(-1)]
    probs = np.exp(out.logits[0] - out.logits[0].max(-1, keepdims=True))
    assert np.allclose(ax.images[0].get_array()[-1], (probs / probs.sum(-1, keepdims=True)).max(-1), atol=1e-6)
    assert cells[-1] == token_label(tok, tok.encode("退")[0], fonts, max_chars=8)
    assert any(a.get_label() == "<colorbar>" for a in fig.axes)


def test_the_logit_lens_shows_the_last_positions_of_a_long_prompt(demo):
    model, tensors, tok = demo
    ids = tok.encode(ENGLISH * 3)
    r = walk(model, tensors, ids, positions=20)
    assert len(ids) > 20 and r["lens_top"].shape == (model.config.num_hidden_layers + 1, 20)
    out = model.forward(np.array([ids]))
    assert (r["lens_top"][-1] == out.logits[0, -20:].argmax(-1)).all()


def test_attention_maps_have_labels_a_colour_bar_and_their_kv_head(demo):
    fonts = no_cjk_font()
    fig, r, ids = draw(demo, ENGLISH, fonts, layers=(1, 2), heads=(1, 2, 5))
    maps = [ax for ax in fig.axes if ax.get_title().startswith("layer ")]
    assert [ax.get_title() for ax in maps] == [f"layer {i}, query head {h} (reads kv head {h // 4})"
                                              for i in (1, 2) for h in (1, 2, 5)]
    labels = [token_label(demo[2], i, fonts) for i in ids]
    for ax in maps:
        assert [x.get_text() for x in ax.get_xticklabels()] == labels
        assert [y.get_text() for y in ax.get_yticklabels()] == labels
        a = ax.images[0].get_array()
        assert a.mask[0, 1] and not a.mask[1, 0] and np.allclose(a.sum(-1), 1, atol=1e-5)  # causal rows of weights
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == len(maps) + 1  # one per map, one for the logit lens


def test_the_gqa_panel_wires_each_query_head_to_its_kv_head():
    fig = figure([[gqa_panel(8, 2, shown=(0, 5))]], no_cjk_font())
    lines = fig.axes[0].get_lines()
    assert len(lines) == 8
    kv_x = {line.get_xdata()[1] for line in lines}
    assert len(kv_x) == 2
    ends = [line.get_xdata()[1] for line in lines]
    assert ends[:4] == [ends[0]] * 4 and ends[4:] == [ends[4]] * 4 and ends[0] < ends[4]
    assert [line.get_linewidth() > 1 for line in lines] == [h in (0, 5) for h in range(8)]


def test_no_gqa_panel_for_multi_head_attention():
    model = golden_model("mha_f32_tied")
    tensors = open_checkpoint(os.path.join(CHECKPOINTS, "mha_f32_tied"))
    ids = [5, 17, 42, 9]
    r = walk(model, tensors, ids)
    rows = pictures(model.config, tensors, r, ids, None, no_cjk_font(), [0], [0, 1])
    fig = figure(rows, no_cjk_font())
    assert not [ax for ax in fig.axes if ax.get_title().startswith("grouped-query")]
    assert [ax.get_title() for ax in fig.axes if ax.get_title().startswith("layer")] == [
        "layer 0, query head 0 (reads kv head 0)", "layer 0, query head 1 (reads kv head 1)"]


@pytest.mark.parametrize("case", ["qwen2_moe_shared", "qwen3_moe_step2"])
def test_a_router_panel_per_chosen_sparse_layer(case):
    """Experts by tokens, coloured by the router's probability, the k chosen outlined."""
    model = golden_model(case)
    cfg = model.config
    tensors = open_checkpoint(os.path.join(CHECKPOINTS, case))
    ids = [5, 17, 42, 9, 200, 31]
    r = walk(model, tensors, ids)
    layers = list(range(cfg.num_hidden_layers))
    fig = figure(pictures(cfg, tensors, r, ids, None, no_cjk_font(), layers, [0]), no_cjk_font())
    routers = [ax for ax in fig.axes if ax.get_title().endswith("the router")]
    sparse = [i for i in layers if cfg.is_sparse(i)]
    assert [ax.get_title() for ax in routers] == [f"layer {i}: the router" for i in sparse]
    for ax, i in zip(routers, sparse):
        shown = ax.images[0].get_array()                                  # [E, t]
        assert np.allclose(shown.T, r["routers"][i])
        outlined = {(round(p.get_x() + 0.5), round(p.get_y() + 0.5)) for p in ax.patches}
        top = np.argsort(-r["routers"][i], axis=-1)[:, :cfg.num_experts_per_tok]
        assert outlined == {(t, int(e)) for t, row in enumerate(top) for e in row}


# explain.router_of rebuilds a full-attention layer's RoPE over all head_dim dimensions; the hybrid
# models rotate only rotary_dim of them, so on their full-attention sparse layers its probabilities
# are not the forward pass's (layer 3 of both checkpoints). The fix is in explain._context
# (rope_inv_freq(cfg.rotary_dim, ...)); remove these marks with it.
@pytest.mark.parametrize("case", ["qwen2_moe_shared", "qwen3_moe_step2", "qwen3_5_moe_text", "qwen3_next"])
def test_the_routing_panel_draws_the_experts_the_forward_pass_runs(case, monkeypatch):
    """Every sparse layer x token cell names the k experts that model.forward's own router (mlp.route,
    recorded as the forward pass calls it) sends the token to, most weighted first, each square
    coloured by the weight its output gets; the load panel counts them. A prompt longer than the
    logit lens's 20 positions shows its last 20 tokens, as the lens does."""
    import npqwen.mlp as mlp
    model = golden_model(case)
    cfg, k = model.config, model.config.num_experts_per_tok
    tensors = open_checkpoint(os.path.join(CHECKPOINTS, case))
    ids = [int(i) for i in np.random.default_rng(7).integers(1, 320, 23)]
    r = walk(model, tensors, ids)
    picked, route = [], mlp.route
    monkeypatch.setattr(mlp, "route", lambda *a: picked.append(route(*a)) or picked[-1])
    model.forward(np.array([ids]))
    sparse = [i for i in range(cfg.num_hidden_layers) if cfg.is_sparse(i)]
    assert len(picked) == len(sparse) >= 2
    fig = figure(pictures(cfg, tensors, r, ids, None, no_cjk_font(), [], [0]), no_cjk_font())
    [ax] = [ax for ax in fig.axes if ax.get_title().startswith("expert routing")]
    assert ax.get_title().endswith("(last 20 of 23 tokens)")
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"layer {i}" for i in sparse]
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"#{i}" for i in ids[-20:]]
    across = min(k, 4)
    down = -(-k // across)
    grid = ax.images[0].get_array()                                       # [layers x slot rows, tokens x slots]
    drawn = {}                                                            # (layer row, token) -> {slot: expert}
    for text in ax.texts:
        x, y = (int(round(v)) for v in text.get_position())
        slot = (down - 1 - y % down) * across + x % across                # slot 0 top left, most weighted
        drawn.setdefault((y // down, x // across), {})[slot] = (int(text.get_text()), float(grid[y, x]))
    assert len(drawn) == len(sparse) * 20
    for row, (chosen, weights) in enumerate(picked):                      # chosen, weights: [23, k]
        for i in range(20):
            cell = drawn[row, i]
            assert [cell[j][0] for j in range(k)] == chosen[3 + i].tolist()
            assert np.allclose([cell[j][1] for j in range(k)], weights[3 + i], atol=1e-5)
    [load] = [ax for ax in fig.axes if ax.get_title().startswith("expert load")]
    counts = np.stack([np.bincount(c[3:].ravel(), minlength=cfg.num_experts) for c, _ in picked])
    assert (load.images[0].get_array() == counts).all() and counts.sum() == len(sparse) * 20 * k


# ---------------------------------------------------------------------------------------------
# the command line


def run(*args):
    return subprocess.run([sys.executable, "-m", "npqwen.explain", *args], cwd=ROOT, capture_output=True, timeout=300)


def test_explain_plot_with_chosen_layers_and_heads(tmp_path):
    png = tmp_path / "maps.png"
    r = run("--plot", str(png), "--layers", "all", "--heads", "2,7", ENGLISH)
    assert r.returncode == 0 and not r.stderr, r.stderr.decode()
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert 800 <= w <= 6000 and 2000 <= h <= 12000  # 4 rows of 2 maps, and the lens


@pytest.mark.parametrize("args, message", [
    (["--plot", "x.png", "--layers", "4"], "--layers must be 'all' or comma-separated numbers from 0 to 3, found '4'"),
    (["--plot", "x.png", "--heads", "one"], "--heads must be 'all' or comma-separated numbers from 0 to 7, found 'one'"),
    (["--heads", "0"], "--layers and --heads choose what --plot draws; add --plot FILE.png"),
    (["--plot", "/no/such/folder/x.png"], "--plot /no/such/folder/x.png: cannot write"),
    (["--plot", "x.notaformat"], "--plot x.notaformat: Format 'notaformat' is not supported"),
])
def test_explain_plot_bad_options(args, message):
    r = run(*args, "hello")
    err = r.stderr.decode()
    assert r.returncode == 2 and err.startswith("error: " + message) and err.count("\n") == 1, err
