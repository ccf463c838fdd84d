"""Pictures of one run, drawn from plain arrays: one function per panel, one function to lay them out.

    attention_panel     one head's attention weights, queries x keys, token labels on both axes
    logit_lens_panel    layers x positions, each cell the top token had the model stopped there
    router_panel        one sparse layer's router: experts x tokens, the k chosen outlined
    routing_panel       every sparse layer at once: layers x tokens, each cell the k experts the token runs
    expert_load_panel   every sparse layer's experts: how many of the tokens each one runs on
    gqa_panel           which key/value head each query head reads (grouped-query attention)
    figure, save        panels laid out in rows: a matplotlib Figure, or a PNG file

A panel function returns a `Panel`: its size in inches and a `draw(ax, fonts)` that paints one
matplotlib Axes, so a new picture is one more function. Token labels come from `token_label`, which
never hands matplotlib a character its fonts lack. CJK text is drawn with the system's CJK font when
it has one and otherwise with the subset of Noto Sans CJK SC that ships in npqwen/fonts (the 3500
characters of level 1 of the Table of General Standard Chinese Characters, every character of the
demo vocabulary and of the seed documents; scripts/make_cjk_font.py builds it). A character neither
has is written as the token id and its escaped UTF-8 bytes (never empty boxes, never "Glyph missing").
No pyplot: figures are built directly; the one change to matplotlib's global state is registering
the bundled font with its font manager, once, when it is first needed.
"""

import dataclasses
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .tokenizer import token_bytes

# ---------------------------------------------------------------------------------------------
# fonts

LATIN_FONT = "DejaVu Sans"  # ships with matplotlib, so always there
# Fonts with CJK glyphs, as matplotlib's font manager names them: Linux packages (fonts-noto-cjk,
# fonts-wqy-*, Source Han), then macOS and Windows.
CJK_FONTS = (
    "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK JP", "Noto Sans CJK KR", "Noto Sans CJK HK",
    "Source Han Sans SC", "Source Han Sans CN", "Source Han Sans", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
    "Droid Sans Fallback", "AR PL UMing CN", "Noto Serif CJK SC",
    "PingFang SC", "Hiragino Sans GB", "Heiti SC", "STHeiti", "Arial Unicode MS",
    "Microsoft YaHei", "SimHei", "SimSun", "MS Gothic",
)
# The CJK font npqwen ships, for machines with none of the above: a subset of Noto Sans CJK SC (SIL
# OFL 1.1, its license in OFL.txt beside it), built by scripts/make_cjk_font.py. Its own family name,
# so that it never stands in for a full Noto Sans CJK SC that is installed.
BUNDLED_FONT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fonts", "NotoSansCJKsc-npqwen-subset.otf")
BUNDLED_FAMILY = "Noto Sans CJK SC npqwen subset"


@dataclass
class Fonts:
    families: list       # matplotlib draws each character with the first family that has it
    charset: frozenset   # the code points some family can draw

    @property
    def cjk(self) -> bool:
        return len(self.families) > 1

    @property
    def bundled(self) -> bool:  # the CJK font is npqwen's subset (the system has no CJK font)
        return BUNDLED_FAMILY in self.families


def _register_bundled(fm):
    """Add npqwen's font to matplotlib's font manager, once a process. The subset has one weight;
    it is listed as its own bold too, so that bold text (the logit lens's hits) is drawn in the
    regular weight instead of matplotlib logging "Failed to find font weight bold"."""
    from matplotlib.ft2font import FT2Font
    if any(f.fname == BUNDLED_FONT for f in fm.fontManager.ttflist):
        return
    regular = fm.ttfFontProperty(FT2Font(BUNDLED_FONT))
    fm.fontManager.ttflist.append(dataclasses.replace(regular, weight=700))
    fm.fontManager.addfont(BUNDLED_FONT)  # the regular entry; also empties findfont's cache


def find_fonts(candidates=CJK_FONTS, bundled=True) -> Fonts:
    """matplotlib's own font, then the first installed CJK font among `candidates`; if none is
    installed, npqwen's bundled subset of Noto Sans CJK SC (unless `bundled` is False: then no CJK
    font, and CJK labels become ids and bytes)."""
    from matplotlib import font_manager as fm
    from matplotlib.ft2font import FT2Font

    def installed():
        return {f.name for f in fm.fontManager.ttflist}

    if candidates and not installed().intersection(candidates):
        # matplotlib lists the system's fonts once, caches the list and never looks again: a font
        # installed since (apt-get install fonts-noto-cjk) is only on disk. Add what is new.
        known = {f.fname for f in fm.fontManager.ttflist}
        for path in fm.findSystemFonts():
            if path not in known:
                try:
                    fm.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):  # an unreadable font file: skip it
                    pass
    names = installed()
    families = [LATIN_FONT] + [c for c in candidates if c in names][:1]
    paths = [fm.findfont(fm.FontProperties(family=family)) for family in families]
    if len(families) == 1 and bundled and os.path.exists(BUNDLED_FONT):  # (a trimmed install may lack it)
        _register_bundled(fm)
        families.append(BUNDLED_FAMILY)
        paths.append(BUNDLED_FONT)
    charset = set()
    for path in paths:
        charset.update(FT2Font(path).get_charmap())
    return Fonts(families, frozenset(charset))


# ---------------------------------------------------------------------------------------------
# token labels


VISIBLE = {" ": "\u2423", "\n": "\\n", "\t": "\\t", "\r": "\\r"}  # ␣ marks a leading space, as BPE keeps it


def token_label(tok, token_id, fonts: Fonts, max_chars=20) -> str:
    """A short label every font in `fonts` can draw. Whitespace is made visible; bytes that are not
    a whole UTF-8 character are written \\xNN. If a character has no glyph in the fonts, the label is
    the token id and the escaped bytes instead, e.g. '#677 \\xe5\\xad\\xa6', or just '#677' when that
    does not fit in max_chars. Longer labels are cut with an ellipsis."""
    if tok is None:
        return f"#{int(token_id)}"
    # bytes that are not part of a whole character decode to stand-ins U+DC80..U+DCFF
    text = token_bytes(tok, token_id).decode("utf-8", errors="surrogateescape")
    pieces, missing = [], False  # one piece per character or stray byte, so a cut never splits an escape
    for ch in text:
        if 0xDC80 <= ord(ch) <= 0xDCFF:
            pieces.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch in VISIBLE and ord(VISIBLE[ch][0]) in fonts.charset:
            pieces.append(VISIBLE[ch])
        elif not ch.isprintable():
            pieces.append(ch.encode("unicode_escape").decode("ascii"))
        elif ord(ch) in fonts.charset:
            pieces.append(ch)
        else:
            missing = True
            pieces.append("".join(f"\\x{b:02x}" for b in ch.encode("utf-8")))
    label = "".join(pieces)
    if missing:
        label = f"#{int(token_id)} {label}"
        return label if len(label) <= max_chars else f"#{int(token_id)}"
    if len(label) > max_chars:
        kept = ""
        for piece in pieces:
            if kept and len(kept) + len(piece) > max_chars - 1:
                break
            kept += piece
        label = kept + "\u2026"
    return label


# ---------------------------------------------------------------------------------------------
# panels


@dataclass
class Panel:
    width: float                     # inches
    height: float
    draw: Callable                   # draw(ax, fonts): paint one Axes


def _tick_size(n):  # label font size for n ticks: 9 points, smaller once they crowd
    return float(np.clip(9 * 24 / max(n, 1), 4, 9))


def _ems(labels):  # the longest label's width in ems (a CJK character about 1, others about 0.6)
    return max((sum(1.0 if ord(ch) >= 0x2E80 else 0.62 for ch in text) for text in labels), default=0)


def _extent(labels, size):  # inches the longest label takes at `size` points
    return _ems(labels) * size / 72


def _rotation(labels):  # x labels stand upright when they are a character or two wide (CJK reads badly sideways)
    return 0 if _ems(labels) <= 1.3 else 90


def _colorbar(ax, image, label):
    ax.figure.colorbar(image, ax=ax, shrink=0.85, pad=0.02).set_label(label, fontsize=8)


def attention_panel(weights, labels, title, masked=None) -> Panel:
    """One head's attention weights [t, t]: row i is how query position i spreads its attention over
    the keys, summing to 1. Masked cells (the future, or outside a sliding window) are left grey."""
    t = len(labels)
    masked = np.triu(np.ones((t, t), bool), 1) if masked is None else masked
    side = float(np.clip(1.5 + 0.3 * t, 3.5, 10)) + _extent(labels, _tick_size(t)) + 0.6

    def draw(ax, fonts):
        import matplotlib
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.88")
        im = ax.imshow(np.ma.masked_array(weights, masked), cmap=cmap, vmin=0, vmax=1)
        fs = _tick_size(t)
        ax.set_xticks(range(t), labels, rotation=_rotation(labels), fontsize=fs, fontfamily=fonts.families)
        ax.set_yticks(range(t), labels, fontsize=fs, fontfamily=fonts.families)
        ax.set_xlabel("key: the token attended to", fontsize=8)
        ax.set_ylabel("query: the token attending", fontsize=8)
        ax.set_title(title, fontsize=9, fontfamily=fonts.families)
        _colorbar(ax, im, "attention weight")
    return Panel(side + 1.2, side, draw)


def logit_lens_panel(probs, cells, rows, columns, hits=None, above=None,
                     title="logit lens: each layer's top next-token guess") -> Panel:
    """The logit lens grid (nostalgebraist 2020; Belrose et al. 2023, "tuned lens"): rows are layers,
    columns prompt positions; each cell is the top token that the final norm and LM head read from
    that layer's output at that position, coloured by its probability. hits [rows, t] marks (outlined)
    cells whose guess is the prompt's real next token; `above` labels the top axis with those tokens."""
    n_rows, t = probs.shape
    cell_w = 0.8

    def draw(ax, fonts):
        import matplotlib
        from matplotlib.patches import Rectangle
        cmap = matplotlib.colormaps["Blues"]
        im = ax.imshow(probs, cmap=cmap, vmin=0, vmax=1, aspect="auto", origin="lower")
        for r in range(n_rows):
            for c in range(t):
                text = cells[r][c]
                # fit the label in its cell: about 0.6 em per character, 72 points per inch
                size = min(11.0, 0.9 * cell_w * 72 / max(_ems([text]), 1))
                hit = hits is not None and hits[r, c]
                ax.text(c, r, text, ha="center", va="center", fontsize=size, fontfamily=fonts.families,
                        color="white" if probs[r, c] > 0.55 else "black", fontweight="bold" if hit else "normal")
                if hit:
                    ax.add_patch(Rectangle((c - 0.46, r - 0.44), 0.92, 0.88, fill=False, ec="tab:orange", lw=2))
        fs = _tick_size(t)
        ax.set_xticks(range(t), columns, rotation=_rotation(columns), fontsize=fs, fontfamily=fonts.families)
        ax.set_yticks(range(n_rows), rows, fontsize=8)
        ax.set_xlabel("input token (position)", fontsize=8)
        if above is not None:
            top = ax.secondary_xaxis("top")
            top.set_xticks(range(t), above, rotation=_rotation(above), fontsize=fs, fontfamily=fonts.families)
            top.set_xlabel("the prompt's real next token (outlined: a layer that guessed it)", fontsize=8)
        ax.set_title(title, fontsize=9)
        _colorbar(ax, im, "probability of the cell's token")
    labels = _extent(columns, _tick_size(t)) + (_extent(above, _tick_size(t)) + 0.5 if above is not None else 0)
    return Panel(2.5 + cell_w * t, 1.6 + 0.42 * n_rows + labels, draw)


def router_panel(probs, k, labels, title) -> Panel:
    """A mixture-of-experts router [t, E]: column i is how token i's router spreads its probability
    over the experts; the k it chose (the experts that run for it) are outlined."""
    t, E = probs.shape
    chosen = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    width = float(np.clip(1.5 + 0.3 * t, 3.5, 12)) + 1.2
    height = float(np.clip(1.2 + 0.22 * E, 2.5, 12)) + _extent(labels, _tick_size(t))

    def draw(ax, fonts):
        from matplotlib.patches import Rectangle
        im = ax.imshow(probs.T, cmap="viridis", vmin=0, vmax=float(probs.max()), aspect="auto")
        for i, row in enumerate(chosen):
            for e in row:
                ax.add_patch(Rectangle((i - 0.5, e - 0.5), 1, 1, fill=False, edgecolor="white", linewidth=1.6))
        fs = _tick_size(t)
        ax.set_xticks(range(t), labels, rotation=_rotation(labels), fontsize=fs, fontfamily=fonts.families)
        ax.set_yticks(range(E), [f"e{e}" for e in range(E)], fontsize=_tick_size(E))
        ax.set_xlabel(f"token (outlined: the {k} experts it runs)", fontsize=8)
        ax.set_ylabel("expert", fontsize=8)
        ax.set_title(title, fontsize=9, fontfamily=fonts.families)
        _colorbar(ax, im, "router probability")
    return Panel(width, height, draw)


def top_experts(probs, k, renormalise):  # router probabilities [..., E] -> chosen [..., k], their weights
    """The k experts a token runs, most weighted first, and the weight each one's output is
    multiplied by: its router probability, divided by the k's sum when the model renormalises
    (`norm_topk_prob`), as mlp.route does."""
    chosen = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
    weights = np.take_along_axis(probs, chosen, axis=-1)
    return chosen, weights / weights.sum(-1, keepdims=True) if renormalise else weights


def routing_panel(probs, k, layers, labels, renormalise, title=None) -> Panel:
    """Mixture-of-experts routing of every sparse layer at once: rows are the sparse layers (the
    first at the bottom, as in the logit lens), columns the tokens. Each cell holds the k experts the
    token runs in that layer, as k small squares (at most 4 across, most weighted first, reading
    left to right then down), each labelled with the expert's id and coloured by the weight its
    output gets. probs: [layers, t, E] router probabilities. A learner sees which experts a token
    keeps from layer to layer, which neighbouring tokens share, and how sure the router is."""
    L, t, E = probs.shape
    chosen, weights = top_experts(probs, k, renormalise)                   # [L, t, k] each
    across = min(k, 4)
    down = -(-k // across)                                                # slot rows per cell
    grid = np.full((L * down, t * across), np.nan)
    slots = []                                                            # (x, y, expert, weight)
    for layer in range(L):
        for i in range(t):
            for j in range(k):
                y = layer * down + (down - 1 - j // across)               # slot 0 on a cell's top row
                x = i * across + j % across
                grid[y, x] = weights[layer, i, j]
                slots.append((x, y, int(chosen[layer, i, j]), float(weights[layer, i, j])))
    slot = 0.3                                                            # inches a slot
    fs = _tick_size(t)

    def draw(ax, fonts):
        import matplotlib
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.88")
        top = float(weights.max())
        im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=top, aspect="auto", origin="lower",
                       interpolation="nearest")
        size = min(8.0, 0.8 * slot * 72 / (0.62 * len(str(E - 1))))      # the widest id fits its square
        for x, y, e, w in slots:
            ax.text(x, y, str(e), ha="center", va="center", fontsize=size,
                    color="white" if w < 0.55 * top else "black")
        for x in range(1, t):                                             # a white frame round each cell
            ax.axvline(x * across - 0.5, color="white", lw=2.5)
        for y in range(1, L):
            ax.axhline(y * down - 0.5, color="white", lw=2.5)
        ax.set_xticks([i * across + (across - 1) / 2 for i in range(t)], labels, rotation=_rotation(labels),
                      fontsize=fs, fontfamily=fonts.families)
        ax.set_yticks([layer * down + (down - 1) / 2 for layer in range(L)], [f"layer {i}" for i in layers],
                      fontsize=8)
        ax.set_xlabel("token (in each cell: the ids of the experts it runs, most weighted first)", fontsize=8)
        ax.set_title(title or f"expert routing: the {k} of {E} experts each token runs, in every sparse layer",
                     fontsize=9, fontfamily=fonts.families)
        _colorbar(ax, im, "weight of the expert's output" + (" (renormalised)" if renormalise else ""))
    width = 2.8 + slot * across * t
    height = 1.5 + slot * down * L + _extent(labels, fs)
    return Panel(width, height, draw)


def expert_load_panel(probs, k, layers) -> Panel:
    """How busy each expert is: rows are the sparse layers (the first at the bottom), columns the
    experts; a cell is the number of the tokens that run the expert in that layer (a count in each
    cell when there are at most 32 experts). A router that spreads its tokens evenly, as the
    load-balancing loss of training asks, gives an even row; unused experts are white."""
    L, t, E = probs.shape
    chosen, _ = top_experts(probs, k, False)
    load = np.stack([np.bincount(chosen[layer].ravel(), minlength=E) for layer in range(L)])   # [L, E]

    def draw(ax, fonts):
        im = ax.imshow(load, cmap="Oranges", vmin=0, vmax=max(int(load.max()), 1), aspect="auto", origin="lower",
                       interpolation="nearest")                           # (many experts: no blur between them)
        if E <= 32:
            for layer in range(L):
                for e in range(E):
                    ax.text(e, layer, str(load[layer, e]), ha="center", va="center", fontsize=7,
                            color="white" if load[layer, e] > 0.6 * load.max() else "black")
        step = max(1, E // 16)
        ax.set_xticks(range(0, E, step), [str(e) for e in range(0, E, step)], fontsize=7)
        ax.set_yticks(range(L), [f"layer {i}" for i in layers], fontsize=8)
        ax.set_xlabel("expert", fontsize=8)
        ax.set_title(f"expert load: of the {t} tokens, how many run each expert", fontsize=9)
        _colorbar(ax, im, "tokens")
    return Panel(float(np.clip(2.2 + 0.25 * E, 3.5, 9)), 1.5 + 0.3 * L, draw)


def gqa_panel(n_heads, n_kv_heads, shown=()) -> Panel:
    """Grouped-query attention as a wiring diagram: each query head (top) reads the keys and values
    of one kv head (bottom), head h reading kv head h // (n_heads / n_kv_heads). Heads in `shown`
    (the ones drawn as attention maps) are coloured."""
    G = n_heads // n_kv_heads

    def draw(ax, fonts):
        kv_x = [(j * G + (G - 1) / 2) for j in range(n_kv_heads)]
        for h in range(n_heads):
            hot = h in shown
            ax.plot([h, kv_x[h // G]], [1, 0], color="tab:orange" if hot else "0.7", lw=2 if hot else 1, zorder=1)
        ax.scatter(range(n_heads), [1] * n_heads, s=120, marker="s", zorder=2,
                   c=["tab:orange" if h in shown else "0.55" for h in range(n_heads)])
        ax.scatter(kv_x, [0] * n_kv_heads, s=220, marker="s", c="tab:blue", zorder=2)
        step = max(1, n_heads // 16)
        for h in range(0, n_heads, step):
            ax.annotate(f"q{h}", (h, 1), xytext=(0, 8), textcoords="offset points", ha="center", fontsize=7)
        for j, x in enumerate(kv_x):
            ax.annotate(f"kv{j}", (x, 0), xytext=(0, -14), textcoords="offset points", ha="center", fontsize=7)
        left = -0.6 - 0.12 * max(n_heads, 8)  # room for the row names
        ax.text(left, 1, "query heads", va="center", fontsize=8)
        ax.text(left, 0, "key/value heads", va="center", fontsize=8)
        ax.set_xlim(left, n_heads - 0.2)
        ax.set_ylim(-0.5, 1.5)
        ax.axis("off")
        ax.set_title(f"grouped-query attention: {n_heads} query heads share {n_kv_heads} kv heads, "
                     f"{G} each", fontsize=9)
    return Panel(float(np.clip(1.5 + 0.4 * n_heads, 4, 12)), 1.8, draw)


# ---------------------------------------------------------------------------------------------
# layout


def figure(rows, fonts: Fonts):
    """Panels in rows (a list of lists of Panel), each row as tall as its tallest panel. -> Figure"""
    from matplotlib.figure import Figure

    widths = [sum(p.width for p in row) for row in rows]
    heights = [max(p.height for p in row) for row in rows]
    fig = Figure(figsize=(max(widths), sum(heights)), layout="constrained")
    subfigs = fig.subfigures(len(rows), 1, height_ratios=heights, squeeze=False)[:, 0]
    for sub, row in zip(subfigs, rows):
        axes = sub.subplots(1, len(row), width_ratios=[p.width for p in row], squeeze=False)[0]
        for ax, panel in zip(axes, row):
            panel.draw(ax, fonts)
    return fig


def save(rows, path, fonts: Fonts, dpi=100):
    """Draw the panels and write them to `path` (the format follows its extension: .png, .svg, .pdf)."""
    figure(rows, fonts).savefig(path, dpi=dpi)
