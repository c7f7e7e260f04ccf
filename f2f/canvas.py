"""Place a source image on the model's canvas, and cut the edit back out.

Two kinds of canvas (`place_on_canvas`, from the `video` settings):

* fixed (`video.width` x `video.height`, e.g. CogVideoX-5B-I2V's only size,
  720x480): the source is scaled, keeping its aspect ratio, to the largest
  size that fits the canvas, centred, on black bars (`letterbox`);
* free (a model that takes any multiple of `video.size_multiple`, e.g. Wan,
  LTX-Video, CogVideoX1.5): a canvas of the source's own aspect ratio within
  `video.max_canvas_pixels` (`fit_canvas`), the source resized onto all of
  it: no bars.

Either way frames of the generated video are cropped to the source's box and
resized back to the source's exact size (`unletterbox`). Both are trusted as
RGB: the source made so by `f2f.request.check_edit`, the frames by the generator.

Letterbox rules:

* the content box touches two opposite edges of the canvas and is centred
  (any odd pixel of margin goes to the right / bottom);
* the content is never smaller than 1x1 nor larger than the canvas;
* everything outside the box is exactly black (0, 0, 0);
* no resampling happens when a size already matches, so a source that already
  fits the canvas is reproduced pixel for pixel, and back;
* resampling is LANCZOS.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from PIL import Image

from f2f.errors import InvalidInput

if TYPE_CHECKING:
    from f2f.config import VideoConfig

_BLACK = (0, 0, 0)


class Box(NamedTuple):
    """A rectangle in canvas pixels; `right` and `bottom` are exclusive."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        """right - left."""
        return self.right - self.left

    @property
    def height(self) -> int:
        """bottom - top."""
        return self.bottom - self.top

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow orders sizes."""
        return (self.width, self.height)


@dataclass(frozen=True)
class Letterboxed:
    """A source placed on the canvas.

    `image` is the RGB canvas (exactly the requested size), `box` where the
    source's content lies on it, `source_size` the (width, height) of the
    source: the size `restore` returns.
    """

    image: Image.Image
    box: Box
    source_size: tuple[int, int]
    fit: Literal["letterbox", "free"] = "letterbox"

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the canvas."""
        return self.image.size

    def restore(self, frame: Image.Image) -> Image.Image:
        """`unletterbox(frame, self.box, self.source_size)`."""
        return unletterbox(frame, self.box, self.source_size)

    def place_mask(self, mask: Image.Image) -> Image.Image:
        """A source-size "L" mask mapped as the source was: resized (nearest) into `box` on a canvas of 0 (bars are kept)."""
        canvas = Image.new("L", self.size, 0)
        inner = (self.box[2] - self.box[0], self.box[3] - self.box[1])
        canvas.paste(mask if mask.size == inner else mask.resize(inner, Image.Resampling.NEAREST), self.box[:2])
        return canvas


def fit_box(source_size: tuple[int, int], width: int, height: int) -> Box:
    """Where a source of `source_size` lies when letterboxed on a width x height canvas.

    scale = min(width / w, height / h); the content is round(w * scale) x
    round(h * scale), at least 1 and at most the canvas in each dimension;
    left = (width - content width) // 2, top = (height - content height) // 2.
    """
    src_w, src_h = _positive_pair("source_size", source_size)
    width, height = _positive_int("width", width), _positive_int("height", height)
    scale = min(width / src_w, height / src_h)
    content_w = min(width, max(1, round(src_w * scale)))
    content_h = min(height, max(1, round(src_h * scale)))
    left, top = (width - content_w) // 2, (height - content_h) // 2
    return Box(left, top, left + content_w, top + content_h)


def letterbox(image: Image.Image, width: int, height: int) -> Letterboxed:
    """Place `image` (upright RGB) centred on a black width x height canvas.

    The content is resized with LANCZOS into `fit_box`'s box, or pasted as is
    when the box already has the source's size.
    """
    source = _require_image("image", image)
    width, height = _positive_int("width", width), _positive_int("height", height)
    box = fit_box(source.size, width, height)
    content = source if box.size == source.size else source.resize(box.size, Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (width, height), _BLACK)
    canvas.paste(content, (box.left, box.top))
    return Letterboxed(image=canvas, box=box, source_size=source.size)


def fit_canvas(source_size: tuple[int, int], max_pixels: int, multiple: int) -> tuple[int, int]:
    """The free canvas for a source: (width, height), multiples of `multiple`, width*height <= max_pixels,
    with the source's aspect ratio as nearly as those multiples allow.

    As the Wan and LTX-Video examples size theirs: h = sqrt(max_pixels * h/w),
    w = sqrt(max_pixels * w/h), each rounded down to a multiple (and at least
    one multiple).
    """
    src_w, src_h = _positive_pair("source_size", source_size)
    max_pixels, multiple = _positive_int("max_pixels", max_pixels), _positive_int("multiple", multiple)
    height = max(multiple, int((max_pixels * src_h / src_w) ** 0.5) // multiple * multiple)
    width = max(multiple, int((max_pixels * src_w / src_h) ** 0.5) // multiple * multiple)
    return width, height


def place_on_canvas(image: Image.Image, video: VideoConfig) -> Letterboxed:
    """The source on the canvas `video` asks for: letterboxed onto width x height when those are set, else
    resized onto `fit_canvas(source, max_canvas_pixels, size_multiple)` (LANCZOS; as is if it already fits)."""
    if video.width is not None and video.height is not None:
        return letterbox(image, video.width, video.height)
    if video.max_canvas_pixels is None or video.size_multiple is None:
        raise InvalidInput("video", video.missing(), "a canvas needs width and height, or max_canvas_pixels and size_multiple")
    source = _require_image("image", image)
    size = fit_canvas(source.size, video.max_canvas_pixels, video.size_multiple)
    canvas = source if size == source.size else source.resize(size, Image.Resampling.LANCZOS)
    return Letterboxed(image=canvas, box=Box(0, 0, *size), source_size=source.size, fit="free")


def unletterbox(frame: Image.Image, box: Box | tuple[int, int, int, int], size: tuple[int, int]) -> Image.Image:
    """Crop `box` out of `frame` (RGB) and resize it (LANCZOS) to `size`.

    The box must lie inside the frame. No resampling happens when the crop
    already has `size`.
    """
    frame = _require_image("frame", frame)
    box = _box_inside("box", box, frame.size)
    size = _positive_pair("size", size)
    crop = frame.crop(box)
    return crop if crop.size == size else crop.resize(size, Image.Resampling.LANCZOS)


# --- argument checks --------------------------------------------------------


def _is_int(value: Any) -> bool:
    """An integer, numpy's included, but not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def _positive_int(name: str, value: Any) -> int:
    """`value` as an int; anything but a positive integer is an InvalidInput naming `name`."""
    if not _is_int(value) or value <= 0:
        raise InvalidInput(name, value, "must be a positive integer")
    return int(value)


def _positive_pair(name: str, value: Any) -> tuple[int, int]:
    """A (width, height) of two positive integers, or an InvalidInput naming `name`."""
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(_is_int(v) and v > 0 for v in value):
        raise InvalidInput(name, value, "must be (width, height), two positive integers")
    return (int(value[0]), int(value[1]))


def _box_inside(name: str, value: Any, frame_size: tuple[int, int]) -> Box:
    """`value` as a Box with 0 <= left < right <= width and 0 <= top < bottom <= height."""
    width, height = frame_size
    rule = f"must be (left, top, right, bottom) integers with a non-empty area inside the {width}x{height} frame"
    if not isinstance(value, (tuple, list)) or len(value) != 4 or not all(_is_int(v) for v in value):
        raise InvalidInput(name, value, rule)
    box = Box(*(int(v) for v in value))
    if not (0 <= box.left < box.right <= width and 0 <= box.top < box.bottom <= height):
        raise InvalidInput(name, value, rule)
    return box


def _require_image(name: str, value: Any) -> Image.Image:
    """`value` if it is a Pillow image, else an InvalidInput naming `name`."""
    if not isinstance(value, Image.Image):
        raise InvalidInput(name, type(value).__name__, "must be a PIL.Image.Image")
    return value
