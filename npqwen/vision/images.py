"""From images to the vision tower's patches, as transformers' PIL backend makes them.

    an image (a file, a PIL.Image, or a uint8 array [H, W, 3])
      -> RGB: a file is EXIF-rotated and converted to RGB (its alpha dropped, as load_image does); then
         any image with transparency is composited onto white (convert_to_rgb)
      -> resized, BICUBIC, by Pillow on the uint8 pixels, to h x w: multiples of P m (patch x merge), with
         h w within [min_pixels, max_pixels] and the aspect ratio kept as nearly as rounding allows (smart_resize)
      -> x / 255 (in float64, then float32), then (x - mean) / std (float32), channels first [C, h, w]
      -> patches [h/P * w/P, C * T * P * P], in 2x2 merge blocks: the m x m patches of one language-model
         token next to each other; each patch's P x P pixels per channel, repeated T times (a still image
         is T identical frames)

Equal to transformers 5.23's Qwen2VLImageProcessorPil (AutoImageProcessor(..., backend="pil")) to float32
rounding; its default torchvision backend resizes differently and differs by up to one 8-bit level.
Pillow is the `vision` extra: `pip install "npqwen[vision]"`; nothing else in npqwen needs it.
"""

import io
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import NpqwenError
from ..jsonfile import read_json_object, shown

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = 3   # PIL.Image.Resampling.BICUBIC
# preprocessor_config.json's fields that npqwen reads; others (the processor's class, video settings) change
# nothing here. A field that would change the result and that npqwen does not do is refused.
READ = {"patch_size", "temporal_patch_size", "merge_size", "min_pixels", "max_pixels", "size", "image_mean",
        "image_std", "rescale_factor", "resample", "do_resize", "do_rescale", "do_normalize", "do_convert_rgb"}
REFUSED_IF_TRUE = ("do_center_crop", "do_pad", "do_reduce_labels")


def _pil():
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise NpqwenError('reading images needs Pillow: pip install "npqwen[vision]" (or pip install pillow)') from None
    return Image, ImageOps


@dataclass(frozen=True)
class ImageProcessor:
    """Qwen2-VL's image processor (Qwen2.5-VL, Qwen3-VL and Qwen3.5 use it with their own numbers)."""
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    image_mean: tuple = OPENAI_CLIP_MEAN
    image_std: tuple = OPENAI_CLIP_STD
    rescale_factor: float = 1 / 255
    resample: int = BICUBIC
    do_resize: bool = True
    do_rescale: bool = True
    do_normalize: bool = True
    do_convert_rgb: bool = True

    def __call__(self, images):
        """images: a list of paths, PIL images or uint8 arrays [H, W, 3] ->
        (pixel_values float32 [n_patches, C*T*P*P], image_grid_thw int64 [n_images, 3])."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise NpqwenError("no images given")
        patches, grids = [], []
        for k, image in enumerate(images):
            p, grid = self.patches(self.pixels(image, k))
            patches.append(p)
            grids.append(grid)
        return np.concatenate(patches), np.asarray(grids, np.int64)

    def pixels(self, image, k=0):  # -> uint8 [H, W, 3], resized
        name = os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"image {k + 1}"
        rgb = to_rgb(open_image(image) if isinstance(image, (str, os.PathLike)) else image, name)
        h, w = rgb.height, rgb.width
        if self.do_resize:
            nh, nw = smart_resize(h, w, self.patch_size * self.merge_size, self.min_pixels, self.max_pixels, name)
            rgb = rgb.resize((nw, nh), resample=self.resample)
        elif h % (self.patch_size * self.merge_size) or w % (self.patch_size * self.merge_size):
            raise NpqwenError(f"{name}: {w} x {h} pixels is not a multiple of {self.patch_size * self.merge_size} "
                              f"(patch x merge) and do_resize is false")
        return np.asarray(rgb, np.uint8)

    def patches(self, pixels):  # uint8 [h, w, 3] -> [h/P * w/P, C*T*P*P], (1, h/P, w/P)
        x = pixels.transpose(2, 0, 1)                                      # [C, h, w]
        if self.do_rescale:
            x = (x.astype(np.float64) * self.rescale_factor).astype(np.float32)
        x = np.asarray(x, np.float32)
        if self.do_normalize:
            mean = np.asarray(self.image_mean, np.float32)[:, None, None]
            std = np.asarray(self.image_std, np.float32)[:, None, None]
            x = (x - mean) / std
        C, h, w = x.shape
        P, m, T = self.patch_size, self.merge_size, self.temporal_patch_size
        gh, gw = h // P, w // P
        x = x.reshape(C, gh // m, m, P, gw // m, m, P).transpose(1, 4, 2, 5, 0, 3, 6)   # [gh/m, gw/m, m, m, C, P, P]
        x = np.broadcast_to(x[:, :, :, :, :, None], x.shape[:5] + (T, P, P))          # T identical frames
        return np.ascontiguousarray(x).reshape(gh * gw, C * T * P * P), (1, gh, gw)


def smart_resize(height, width, factor, min_pixels, max_pixels, name="image"):
    """The size an image is resized to: both sides multiples of `factor`, about height x width pixels
    (Python's round(), half to even, as transformers), scaled into [min_pixels, max_pixels]."""
    if max(height, width) / min(height, width) > 200:
        raise NpqwenError(f"{name}: {width} x {height} pixels has an aspect ratio over 200, which the model's "
                          f"processor refuses")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


# ---------------------------------------------------------------------------------------------
# reading images


def open_image(path, data=None):
    """A file (or its bytes, `data`, named `path`) -> an RGB PIL image, EXIF-rotated (transformers'
    load_image). One clear error for a file that is missing, not an image, truncated or corrupt, or a
    decompression bomb (more pixels than Pillow's MAX_IMAGE_PIXELS: refused before any is decoded,
    never a huge allocation)."""
    Image, ImageOps = _pil()
    path = os.fspath(path)
    if data is None and not os.path.isfile(path):
        raise NpqwenError(f"{path}: no such image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if data is None else io.BytesIO(data)) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
                return im.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise NpqwenError(f"{path}: the image is larger than Pillow's limit of {Image.MAX_IMAGE_PIXELS:,} pixels "
                          f"(a decompression bomb?)") from None
    except Image.UnidentifiedImageError:
        raise NpqwenError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:   # truncated, corrupt: Pillow raises these at load()
        raise NpqwenError(f"{path}: a broken image file ({str(e)[:120] or type(e).__name__})") from None


def to_rgb(image, name):
    """A PIL image or uint8 array -> an RGB PIL image: transparency composited onto white, as
    transformers' convert_to_rgb does (a PIL image as given: not EXIF-rotated)."""
    Image, _ = _pil()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            raise NpqwenError(f"{name}: an image array must be uint8 [height, width, 3] (RGB), found {image.dtype} "
                              f"{list(image.shape)}")
        return Image.fromarray(np.ascontiguousarray(image), "RGB")
    if not isinstance(image, Image.Image):
        raise NpqwenError(f"{name}: expected a file path, a PIL image or a uint8 array, found {type(image).__name__}")
    if image.width == 0 or image.height == 0:
        raise NpqwenError(f"{name}: the image is empty ({image.width} x {image.height} pixels)")
    try:
        if "A" in image.getbands() or image.info.get("transparency") is not None:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise NpqwenError(f"{name}: a broken image ({str(e)[:120] or type(e).__name__})") from None


# ---------------------------------------------------------------------------------------------
# preprocessor_config.json


def load_image_processor(path) -> ImageProcessor:
    """The image processor a checkpoint folder's preprocessor_config.json describes (transformers'
    Qwen2VLImageProcessor fields; size {shortest_edge, longest_edge} or min_pixels / max_pixels)."""
    path = os.fspath(path)
    file = os.path.join(path, "preprocessor_config.json") if os.path.isdir(path) else path
    d = read_json_object(file)
    if d is None:
        raise NpqwenError(f"{path}: no preprocessor_config.json (a vision-language checkpoint has one)")
    for key in REFUSED_IF_TRUE:
        if d.get(key):
            raise NpqwenError(f"{file}: {key} is not supported by npqwen (Qwen's processors do not set it)")
    out = {}
    for key in ("patch_size", "temporal_patch_size", "merge_size"):
        if key in d:
            out[key] = _positive_int(d[key], key, file)
    size = d.get("size")
    if size is not None:
        if not isinstance(size, dict):
            raise NpqwenError(f"{file}: size must be an object with shortest_edge and longest_edge, found {shown(size)}")
        for key, field in (("shortest_edge", "min_pixels"), ("longest_edge", "max_pixels"),
                           ("min_pixels", "min_pixels"), ("max_pixels", "max_pixels")):
            if size.get(key) is not None:
                out[field] = _positive_int(size[key], f"size.{key}", file)
    for key in ("min_pixels", "max_pixels"):   # the older names override size, as transformers reads them
        if d.get(key) is not None:
            out[key] = _positive_int(d[key], key, file)
    for key in ("image_mean", "image_std"):
        if key in d:
            v = d[key]
            v = [v] * 3 if isinstance(v, (int, float)) and not isinstance(v, bool) else v
            if not isinstance(v, list) or len(v) != 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                                  for x in v) or (key == "image_std" and 0 in v):
                raise NpqwenError(f"{file}: {key} must be 3 numbers (one per RGB channel), found {shown(v)}")
            out[key] = tuple(float(x) for x in v)
    if "rescale_factor" in d:
        r = d["rescale_factor"]
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0:
            raise NpqwenError(f"{file}: rescale_factor must be a positive number, found {shown(r)}")
        out["rescale_factor"] = float(r)
    if d.get("resample") is not None:
        if d["resample"] not in (0, 1, 2, 3, 4, 5):
            raise NpqwenError(f"{file}: resample must be a Pillow filter number (0 to 5), found {shown(d['resample'])}")
        out["resample"] = d["resample"]
    for key in ("do_resize", "do_rescale", "do_normalize", "do_convert_rgb"):
        if d.get(key) is not None:
            if not isinstance(d[key], bool):
                raise NpqwenError(f"{file}: {key} must be true or false, found {shown(d[key])}")
            out[key] = d[key]
    if out.get("do_convert_rgb") is False:
        raise NpqwenError(f"{file}: do_convert_rgb false is not supported by npqwen (images are read as RGB)")
    proc = ImageProcessor(**out)
    if proc.min_pixels > proc.max_pixels:
        raise NpqwenError(f"{file}: the smallest size ({proc.min_pixels} pixels) is above the largest ({proc.max_pixels})")
    return proc


def _positive_int(v, key, file):
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise NpqwenError(f"{file}: {key} must be a positive integer, found {shown(v)}")
    return v
