"""Image input, piece by piece: the processor's sizes and patch layout, the tower's bookkeeping
(positions, windows), M-RoPE, the prompt's placeholders, and bad images. test_golden_vision.py holds
all of it to transformers' numbers."""

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st
from PIL import Image

from npqwen import NpqwenError
from npqwen.primitives import mrope_cos_sin, rope_cos_sin
from npqwen.vision.images import ImageProcessor, open_image, smart_resize
from npqwen.vision.multimodal import expand_image_pads, rope_index
from npqwen.vision.tower import interpolation_taps, patch_rows_cols, window_order

QWEN3 = ImageProcessor(patch_size=16, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5),
                       min_pixels=32 * 32, max_pixels=256 * 256)


@given(h=st.integers(1, 5000), w=st.integers(1, 5000))
def test_smart_resize_gives_whole_merge_blocks_within_the_pixel_budget(h, w):
    assume(max(h, w) / min(h, w) <= 200)
    factor, lo, hi = 28, 56 * 56, 28 * 28 * 1280
    nh, nw = smart_resize(h, w, factor, lo, hi)
    assert nh % factor == 0 and nw % factor == 0 and nh >= factor and nw >= factor
    if nh > factor and nw > factor:           # (a side clamped at one block may overshoot)
        assert nh * nw <= hi
    assert nh * nw >= lo or h * w >= lo      # scaled up only as far as min_pixels needs


def test_smart_resize_rounds_half_to_even_as_python():
    # 42 / 28 = 1.5 -> 2 blocks, 70 / 28 = 2.5 -> 2 blocks: Python's round(), as transformers uses it
    assert smart_resize(42, 70, 28, 1, 10 ** 9) == (56, 56)


def test_an_aspect_ratio_over_200_is_refused():
    with pytest.raises(NpqwenError, match="aspect ratio"):
        smart_resize(1, 201, 28, 1, 10 ** 9)


def test_patches_are_merge_blocks_of_normalised_pixels():
    """An image already of a fitting size is not resampled; patch k is then the pixels its merge block,
    row and column say, normalised, repeated over the T frames."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)      # 4 x 6 patches of 16
    pv, grid = QWEN3([img])
    assert grid.tolist() == [[1, 4, 6]] and pv.shape == (24, 3 * 2 * 16 * 16)
    x = (img.astype(np.float64) / 255).astype(np.float32)
    x = (x - np.float32(0.5)) / np.float32(0.5)
    k = 0
    for br in range(2):
        for bc in range(3):
            for i in range(2):
                for j in range(2):
                    r, c = (2 * br + i) * 16, (2 * bc + j) * 16
                    patch = x[r:r + 16, c:c + 16].transpose(2, 0, 1)          # [C, P, P]
                    want = np.stack([patch, patch], axis=1).ravel()           # [C, T, P, P]
                    np.testing.assert_array_equal(pv[k], want)
                    k += 1


def test_transparency_is_composited_onto_white():
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = 10
    rgba[:, 32:, 3] = 255          # left half fully transparent, right half opaque
    white = np.full((64, 64, 3), 255, np.uint8)
    white[:, 32:] = 10
    np.testing.assert_array_equal(QWEN3([Image.fromarray(rgba, "RGBA")])[0], QWEN3([white])[0])
    palette = Image.fromarray(rgba[..., :3]).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = palette.getpixel((0, 0))   # the one colour: all of it transparent
    np.testing.assert_array_equal(QWEN3([palette])[0], QWEN3([np.full((64, 64, 3), 255, np.uint8)])[0])


def test_a_file_is_exif_rotated_and_a_pil_image_is_not(tmp_path):
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 96, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6                                             # rotate 90 degrees clockwise to view
    path = tmp_path / "x.jpg"
    img.save(path, exif=exif)
    assert QWEN3([str(path)])[1].tolist() == [[1, 6, 2]]     # 96 high, 32 wide once rotated
    assert QWEN3([Image.open(path)])[1].tolist() == [[1, 2, 6]]


def test_large_images_are_resized_within_max_pixels():
    pv, grid = QWEN3([np.zeros((1000, 3000, 3), np.uint8)])
    t, h, w = grid[0]
    assert h * w * 16 * 16 <= 256 * 256 and abs(w / h - 3) < 0.5


# ---------------------------------------------------------------------------------------------
# the tower's bookkeeping


def test_patch_rows_and_columns_follow_merge_blocks():
    row, col = patch_rows_cols([[1, 4, 6]], 2)
    # block (0, 0): (0,0) (0,1) (1,0) (1,1), then block (0, 1): (0,2) (0,3) (1,2) (1,3) ...
    assert list(zip(row[:8], col[:8])) == [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3), (1, 2), (1, 3)]
    assert sorted(zip(row, col)) == [(r, c) for r in range(4) for c in range(6)]


def test_position_interpolation_hits_the_grid_at_the_corners():
    """align_corners: an image as many patches wide as the grid reads the grid's own rows, weight 1."""
    idx, wts = interpolation_taps([[1, 4, 4]], 4, 2)
    row, col = patch_rows_cols([[1, 4, 4]], 2)
    top = wts.argmax(1)
    assert np.allclose(wts.max(1), 1)
    np.testing.assert_array_equal(idx[np.arange(16), top], row * 4 + col)
    idx, wts = interpolation_taps([[1, 2, 6]], 4, 2)           # between grid points: weights sum to 1
    np.testing.assert_allclose(wts.sum(1), 1, rtol=1e-6)


class _W:
    spatial_merge_size, patch_size, window_size = 2, 14, 112   # windows of 4 x 4 merge blocks


@given(h=st.integers(1, 12), w=st.integers(1, 12), n=st.integers(1, 3))
def test_windows_are_a_permutation_of_whole_merge_blocks(h, w, n):
    grid = [[1, 2 * h, 2 * w]] * n
    order, bounds = window_order(grid, _W)
    assert sorted(order.tolist()) == list(range(4 * h * w * n))
    assert bounds[-1] == len(order) and (np.diff(bounds) % 4 == 0).all() and (np.diff(bounds) > 0).all()
    assert (order[::4] % 4 == 0).all() and (np.diff(order.reshape(-1, 4), axis=1) == 1).all()
    assert len(bounds) - 1 == n * (-(-h // 4)) * (-(-w // 4))     # ceil(h / 4) x ceil(w / 4) windows an image


# ---------------------------------------------------------------------------------------------
# M-RoPE and the prompt


def test_rope_index_by_hand():
    """3 text tokens, an image of 4 x 6 patches (2 x 3 tokens with 2 x 2 merging), 2 text tokens."""
    pads = np.array([[0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0]], bool)
    pos, delta = rope_index(pads, None, np.array([[1, 4, 6]]), 2)
    assert pos[:, 0, :3].tolist() == [[0, 1, 2]] * 3
    assert pos[0, 0, 3:9].tolist() == [3] * 6
    assert pos[1, 0, 3:9].tolist() == [3, 3, 3, 4, 4, 4]
    assert pos[2, 0, 3:9].tolist() == [3, 4, 5, 3, 4, 5]
    assert pos[:, 0, 9:].tolist() == [[6, 7]] * 3                   # resumes at 3 + max(2, 3)
    assert delta.tolist() == [8 - 11]


def test_rope_index_skips_left_padding():
    pads = np.array([[0, 0, 1, 1, 0]], bool)
    mask = np.array([[0, 1, 1, 1, 1]])
    pos, delta = rope_index(pads, mask, np.array([[1, 2, 4]]), 2)
    assert pos[:, 0, 1:].tolist() == [[0, 1, 1, 3], [0, 1, 1, 3], [0, 1, 2, 3]]
    assert delta.tolist() == [4 - 4]


@given(st.lists(st.integers(0, 50), min_size=1, max_size=6), st.sampled_from(["interleaved", "contiguous"]))
def test_mrope_with_equal_positions_is_rope(positions, layout):
    inv_freq = np.float32(10000.0) ** -(np.arange(0, 24, 2, dtype=np.float32) / np.float32(24))
    p = np.array([positions])
    cos, sin = mrope_cos_sin(inv_freq, np.stack([p, p, p]), [4, 4, 4], layout)
    want = rope_cos_sin(inv_freq, p)
    np.testing.assert_array_equal(cos, want[0])
    np.testing.assert_array_equal(sin, want[1])


def test_mrope_layouts_give_each_frequency_its_axis():
    inv_freq = np.ones(6, np.float32)
    pos = np.array([[[1]], [[2]], [[3]]])                     # t = 1, h = 2, w = 3
    angle = lambda layout: np.arccos(mrope_cos_sin(inv_freq, pos, [2, 2, 2], layout)[0][0, 0, :6]).round(4)
    np.testing.assert_allclose(angle("contiguous"), [1, 1, 2, 2, 3, 3], atol=1e-3)
    np.testing.assert_allclose(angle("interleaved"), [1, 2, 3, 1, 2, 3], atol=1e-3)


def test_each_placeholder_becomes_one_per_token_of_its_image():
    ids = expand_image_pads([1, 9, 2, 9, 3], [[1, 2, 2], [1, 4, 6]], 9, 2)
    assert ids == [1, 9, 2] + [9] * 6 + [3]
    with pytest.raises(NpqwenError, match="1 image placeholder .* 2 images"):
        expand_image_pads([1, 9, 2], [[1, 2, 2], [1, 2, 2]], 9, 2)


# ---------------------------------------------------------------------------------------------
# bad images: one clear error naming the file


def _png_header(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("what, data, message", [
    ("text", b"just some text, not an image\n", "not an image file"),
    ("truncated", None, "broken image"),
    ("bomb", _png_header(40_000, 40_000), "decompression bomb"),
])
def test_bad_image_files_are_named(tmp_path, what, data, message):
    path = tmp_path / "x.png"
    if data is None:
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
        data = buf.getvalue()[:len(buf.getvalue()) // 2]
    path.write_bytes(data)
    with pytest.raises(NpqwenError, match=message) as e:
        QWEN3([str(path)])
    assert str(path) in str(e.value)


def test_bad_image_arguments():
    with pytest.raises(NpqwenError, match="no such image file"):
        open_image("/no/such/picture.png")
    with pytest.raises(NpqwenError, match=r"uint8 \[height, width, 3\]"):
        QWEN3([np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(NpqwenError, match="found int"):
        QWEN3([7])


def test_placeholder_runs_must_match_the_images_given():
    from npqwen.vision.multimodal import check_placeholders
    pads = np.array([[0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0]], bool)      # two runs of 4
    check_placeholders(pads, np.array([[1, 4, 4], [1, 2, 8]]), 4)   # two images of 4 tokens: fine
    with pytest.raises(NpqwenError, match="2 images .* but 1 image was given"):
        check_placeholders(pads, np.array([[1, 4, 4]]), 4)
    with pytest.raises(NpqwenError, match="image 2 has 8 tokens"):
        check_placeholders(pads, np.array([[1, 4, 4], [1, 4, 8]]), 4)
