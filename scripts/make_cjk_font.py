"""Build the CJK font npqwen ships: a subset of Noto Sans CJK SC, so that `python -m npqwen.explain
--plot` draws Chinese on a machine that has no CJK font of its own.

    python scripts/make_cjk_font.py [--source FONT.ttc] [--out npqwen/fonts/NotoSansCJKsc-npqwen-subset.otf]

Needs fontTools (`pip install fonttools`; matplotlib already depends on it) at build time only: npqwen
itself only reads the font, through matplotlib. The source is the Simplified Chinese face of Debian's
fonts-noto-cjk (apt-get install -y fonts-noto-cjk), SIL Open Font License 1.1, which allows subsetting
and redistributing with the license; OFL.txt, written beside the font, carries the font's copyright
notice and the license text from the Debian package's copyright file.

The subset holds the glyphs of
  - every character of the demo model's vocabulary (each token id of golden/checkpoints/demo decoded
    to text; the ASCII and other non-ASCII characters alike),
  - every character of the seed documents (every file in ../shared/seeds, listed when this runs; a
    file that is not UTF-8 text is reported and skipped),
  - the 3500 characters of level 1 of the Table of General Standard Chinese Characters (通用规范汉字表,
    一级字表), scripts/data/tongyong_guifan_level1.txt, which says where the list comes from,
  - what the labels of npqwen/plots.py use: ASCII, the visible-whitespace markers (plots.VISIBLE),
    the ellipsis of a cut label, CJK punctuation (U+3000-303F) and the full-width forms (U+FF01-FF5E).
To stay under 2 MB it drops what matplotlib never reads: hinting, the layout tables (GSUB, GPOS,
GDEF, BASE: matplotlib's text engine applies no OpenType features), vertical metrics, and all names
but the copyright, license and the new font name. The family is renamed "Noto Sans CJK SC npqwen
subset" so that it is never mistaken for a full installed Noto Sans CJK SC.
It prints the file's size and its number of glyphs, and the requested characters the face lacks.
"""

import argparse
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

SOURCE = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"
FACE = "Noto Sans CJK SC"                                  # the face of the collection to subset
FAMILY = "Noto Sans CJK SC npqwen subset"                  # plots.BUNDLED_FAMILY: the name it gets
POSTSCRIPT = "NotoSansCJKsc-npqwen-subset"
OUT = os.path.join(ROOT, "npqwen", "fonts", POSTSCRIPT + ".otf")
DEBIAN_COPYRIGHT = "/usr/share/doc/fonts-noto-cjk/copyright"
LEVEL1 = os.path.join(ROOT, "scripts", "data", "tongyong_guifan_level1.txt")
SEEDS = os.path.join(ROOT, "..", "shared", "seeds")
DEMO = os.path.join(ROOT, "golden", "checkpoints", "demo")
MAX_BYTES = 2 * 1024 * 1024
# full-width punctuation a Chinese label may hold (also within the ranges below; listed for the record)
PUNCTUATION = "，。！？、：；“”‘’（）《》…—·"


class BuildError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# the characters to keep


def level1_chars(path=LEVEL1):
    """The 3500 characters of 通用规范汉字表 level 1, from the data file (comment lines start with #)."""
    with open(path, encoding="utf-8") as f:
        chars = [ch for line in f if not line.startswith("#") for ch in line.strip()]
    if len(chars) != 3500 or len(set(chars)) != 3500:
        raise BuildError(f"{path}: expected 3500 distinct characters, found {len(chars)} ({len(set(chars))} distinct)")
    return chars


def vocabulary_chars(model=DEMO):
    """Every whole character any token of the model's vocabulary stands for (bytes that are only part
    of a character are left out: a label shows those as \\xNN)."""
    from npqwen.tokenizer import Tokenizer, token_bytes
    tok = Tokenizer(model)
    chars = set()
    for i in range(tok.tok.get_vocab_size(with_added_tokens=True)):
        chars.update(token_bytes(tok, i).decode("utf-8", errors="ignore"))
    return chars


def seed_chars(folder=SEEDS):
    """Every character of the files in `folder` (whatever files it holds today)."""
    chars = set()
    if not os.path.isdir(folder):
        print(f"note: no seed folder at {folder}; its characters are not added")
        return chars
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                chars.update(f.read())
        except UnicodeDecodeError:  # a picture or other binary file: nothing to draw from it
            print(f"note: {path} is not UTF-8 text; skipped")
    return chars


def label_chars():
    """What plots.py writes itself: ASCII, the visible-whitespace markers, the ellipsis, CJK punctuation."""
    from npqwen.plots import VISIBLE
    chars = {chr(c) for c in range(0x20, 0x7F)} | set("".join(VISIBLE.values())) | set(PUNCTUATION)
    chars |= {chr(c) for c in range(0x3000, 0x3040)} | {chr(c) for c in range(0xFF01, 0xFF5F)}
    return chars


# ---------------------------------------------------------------------------------------------
# the font


def open_face(source, face=FACE):
    """The face named `face` of a collection (.ttc), or the font itself (.otf/.ttf)."""
    from fontTools.ttLib import TTCollection, TTFont
    if not os.path.exists(source):
        raise BuildError(f"{source} not found: apt-get install -y fonts-noto-cjk, or pass --source")
    if source.lower().endswith((".ttc", ".otc")):
        names = [f["name"].getDebugName(1) for f in TTCollection(source, lazy=True).fonts]
        if face not in names:
            raise BuildError(f"{source} has no face {face!r} (it has {', '.join(names)})")
        return TTFont(source, fontNumber=names.index(face))
    return TTFont(source)


def subset(font, chars):
    """Keep the glyphs of `chars` (those the font has) and nothing matplotlib does not read."""
    from fontTools import subset as fts
    options = fts.Options()
    options.hinting = False                  # CFF hints: FreeType's autohinter does as well at label sizes
    options.layout_features = []             # no OpenType features: matplotlib applies none
    options.drop_tables += ["GSUB", "GPOS", "GDEF", "BASE", "VORG", "vhea", "vmtx", "DSIG"]
    options.name_IDs = [0, 13, 14]           # copyright and license; the names are set below
    options.name_languages = [0x409]
    options.notdef_outline = True
    options.recalc_bounds = True
    sub = fts.Subsetter(options)
    sub.populate(unicodes=sorted(ord(ch) for ch in chars))
    sub.subset(font)


def rename(font):
    """A family name of its own, so a full Noto Sans CJK SC on the same machine is never shadowed."""
    name = font["name"]
    version = "Version 2.004 (subset by npqwen, scripts/make_cjk_font.py)"
    for platform in ((3, 1, 0x409), (1, 0, 0)):
        for nid, text in ((1, FAMILY), (2, "Regular"), (3, f"{POSTSCRIPT};npqwen"), (4, FAMILY),
                          (5, version), (6, POSTSCRIPT)):
            name.setName(text, nid, *platform)
    cff = font["CFF "].cff
    cff.fontNames = [POSTSCRIPT]
    top = cff.topDictIndex[0]
    for key in ("FullName", "FamilyName"):
        if hasattr(top, key):
            setattr(top, key, FAMILY)


def license_text(font, debian=DEBIAN_COPYRIGHT):
    """OFL.txt: the font's copyright notice, then the SIL OFL 1.1 as Debian's copyright file states it."""
    notice = font["name"].getDebugName(0)
    if not os.path.exists(debian):
        raise BuildError(f"{debian} not found: the license text comes from the fonts-noto-cjk package")
    with open(debian, encoding="utf-8") as f:
        lines = f.read().splitlines()
    # the stand-alone paragraph (a "Files:" paragraph names the license too, on one line)
    starts = [i for i, line in enumerate(lines[:-1]) if line == "License: SIL-1.1" and lines[i + 1].startswith(" ")]
    if not starts:
        raise BuildError(f"{debian} has no 'License: SIL-1.1' paragraph")
    start = starts[0]
    body = []
    for line in lines[start + 1:]:
        if not line.startswith(" "):      # the next paragraph
            break
        body.append("" if line == " ." else line[1:])
    return (f"{FAMILY} ({POSTSCRIPT}.otf) is a subset of Noto Sans CJK SC Regular (Debian fonts-noto-cjk),\n"
            f"made by npqwen's scripts/make_cjk_font.py. It is distributed under the SIL Open Font License 1.1.\n\n"
            f"{notice}\nCopyright 2010-2012, Google Corporation (as Debian's copyright file states it).\n"
            f"Noto is a trademark of Google Inc.\n\n" + "\n".join(body).strip("\n") + "\n")


# ---------------------------------------------------------------------------------------------
# main


def build(source=SOURCE, out=OUT, seeds=SEEDS, model=DEMO):
    font = open_face(source)
    has = set(font.getBestCmap())
    wanted = {"level 1 of 通用规范汉字表": set(level1_chars()), "the demo vocabulary": vocabulary_chars(model),
              "the seed documents": seed_chars(seeds), "npqwen's labels": label_chars()}
    chars = {ch for ch in set().union(*wanted.values()) if ch.isprintable()}  # control bytes get escapes
    lacking = sorted(ch for ch in chars if ord(ch) not in has)
    if any(ord(ch) not in has for ch in wanted["level 1 of 通用规范汉字表"]):
        raise BuildError(f"{source} lacks level-1 characters: is it the Simplified Chinese face?")
    for what, group in wanted.items():
        print(f"{what}: {len(group)} characters")
    if lacking:
        print(f"not in {FACE} (left to the other fonts, or to an escaped label): "
              + " ".join(f"U+{ord(ch):04X}" for ch in lacking))
    subset(font, chars)
    rename(font)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    font.recalcTimestamp = False    # keep the source's date: the same inputs give the same bytes
    font.save(out)
    with open(os.path.join(os.path.dirname(os.path.abspath(out)), "OFL.txt"), "w", encoding="utf-8") as f:
        f.write(license_text(font))
    size = os.path.getsize(out)
    print(f"{out}: {size} bytes ({size / 2 ** 20:.2f} MiB), {len(font.getGlyphOrder())} glyphs, "
          f"{len(font.getBestCmap())} characters")
    if size > MAX_BYTES:
        raise BuildError(f"{out} is {size} bytes, over the {MAX_BYTES} allowed")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=SOURCE, help="Noto Sans CJK collection (.ttc) or the SC face (.otf)")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--seeds", default=SEEDS, help="folder of seed documents whose characters to keep")
    args = ap.parse_args(argv)
    try:
        import fontTools  # noqa: F401
    except ImportError:
        print("error: this script needs fontTools: pip install fonttools", file=sys.stderr)
        return 2
    try:
        build(args.source, args.out, args.seeds)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
