"""Turn a photo of a garment into the image the network was trained on. Pure: a PIL image in, an array out.

Fashion-MNIST was made from product photos on light backgrounds (zalandoresearch/fashion-mnist, "How it was
made"): trim the edges close to the corner colour (5% of the intensity range), resize the longest edge to 28 px,
sharpen, centre on a 28x28 canvas, negate (garment light on black), 8-bit grey. `to_fashion_mnist` does the same,
so a photo and a test image reach the network alike. An image that already is a Fashion-MNIST sample (28x28 on
a dark background) passes through unchanged rather than being negated twice.
"""

import io
import math

import numpy as np
from PIL import ExifTags, Image, ImageFilter, ImageOps, UnidentifiedImageError

SIZE = 28  # Fashion-MNIST images are 28 x 28
TRIM_TOLERANCE = 0.05 * 255  # a pixel within 5% of the intensity range of the corner colour is background
DARK_BACKGROUND = 64  # mean border grey (0..255) below which a 28x28 image counts as already converted
MIN_GARMENT_SIDE_PX = 3  # a garment narrower or lower than this (after trimming) is no garment
# A product shot shows one garment on a plain background: at least this share of the photo's edge has the corners'
# colour, even where the garment touches the edge (the dataset's own garments, enlarged with no margin at all, keep
# well over half their edge background: docs/results.md). A scene, a face or a page has its subject at the edge;
# trimmed by the corners' colour, it would fill the canvas like a bag.
MIN_BACKGROUND_EDGE = 0.5


class UnusableImage(ValueError):
    """An input that cannot be classified; the message says why. `http_status` is what `fmnist serve` answers."""

    http_status = 415  # Unsupported Media Type


class EmptyImage(UnusableImage):
    """Zero bytes."""

    http_status = 400


class NotAnImage(UnusableImage):
    """Bytes that no image format Pillow knows can decode."""


class DamagedImage(UnusableImage):
    """A known image format, but truncated or malformed."""


class TooLargeImage(UnusableImage):
    """More pixels than Pillow decodes safely (its decompression-bomb limit)."""

    http_status = 413


class NoGarmentError(UnusableImage):
    """The image has nothing to classify: it is blank, one flat colour, or too small."""

    http_status = 422


class NoPlainBackground(UnusableImage):
    """The photo has no plain background to cut a garment out of: the conversion would keep the whole scene."""

    http_status = 422


def decode(data: bytes) -> np.ndarray:
    """An encoded image (PNG, JPEG, ...) -> the (28, 28) uint8 network input; an UnusableImage saying what is wrong."""
    if not data:
        raise EmptyImage("an empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode now, so a truncated file fails here and not halfway through
            return to_fashion_mnist(image)
    except UnidentifiedImageError:
        raise NotAnImage("not an image that Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise TooLargeImage(f"too large to decode safely ({exc})") from None
    except (OSError, SyntaxError) as exc:  # Pillow's truncated or malformed data
        raise DamagedImage(f"a damaged or truncated image ({exc})") from None


def to_fashion_mnist(image: Image.Image) -> np.ndarray:
    """Any PIL image -> (28, 28) uint8, garment light on black, as the network's training images."""
    rgb = on_white(upright(image))
    if rgb.size == (SIZE, SIZE) and border_mean(rgb.convert("L")) < DARK_BACKGROUND:
        return np.asarray(rgb.convert("L"), dtype=np.uint8)  # already light-on-black: no double inversion
    garment = rgb.crop(garment_box(rgb))
    scale = SIZE / max(garment.size)
    width, height = (max(1, round(side * scale)) for side in garment.size)
    # Downscale as the dataset did (box filter, then a light sharpening to bring back the outlines).
    small = garment.resize((width, height), Image.Resampling.BOX).filter(
        ImageFilter.UnsharpMask(radius=1, percent=50, threshold=0)
    )
    canvas = Image.new("RGB", (SIZE, SIZE), "white")
    canvas.paste(small, ((SIZE - width) // 2, (SIZE - height) // 2))
    return 255 - np.asarray(canvas.convert("L"), dtype=np.uint8)  # negate: light garment on black


def upright(image: Image.Image) -> Image.Image:
    """The image as shown: a phone's portrait photo is stored sideways plus an EXIF tag saying how to turn it."""
    image.load()
    if image.getexif().get(ExifTags.Base.Orientation, 1) == 1:
        return image  # upright already (most images): exif_transpose would copy every pixel to say so
    return ImageOps.exif_transpose(image)


def on_white(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white (a cut-out product shot has a transparent background)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, "white")
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")  # no copy when there is nothing to convert


def border_mean(grey: Image.Image) -> float:
    """Mean value of the outermost ring of pixels of a greyscale image."""
    pixels = np.asarray(grey, dtype=np.float64)
    return float(np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]).mean())


def background_edge(mask: Image.Image) -> float:
    """The share of the outermost ring of pixels that is background (0 in every band of `mask`, an RGB image whose
    bands are 0 or 255)."""
    width, height = mask.size
    edges = ((0, 0, width, 1), (0, height - 1, width, height), (0, 0, 1, height), (width - 1, 0, width, height))
    # Pillow counts each strip's colours in C (at most 8 here): no copy into NumPy, a third of the time, which a
    # server's decode threads spend holding the GIL.
    background = ring = 0
    for edge in edges:
        colours = mask.crop(edge).getcolors(8)
        assert colours is not None  # each band is 0 or 255: 8 colours at most
        ring += sum(count for count, _ in colours)
        background += sum(count for count, colour in colours if colour == (0, 0, 0))
    return background / ring


def garment_box(rgb: Image.Image) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the pixels that differ from the corner colour by more than the tolerance."""
    width, height = rgb.size
    if min(height, width) < MIN_GARMENT_SIDE_PX:
        raise NoGarmentError(f"no garment found: the image is only {width}x{height} pixels")
    corners = [rgb.getpixel(xy) for xy in ((0, 0), (width - 1, 0), (0, height - 1), (width - 1, height - 1))]
    # Per band: the median of the corners (one odd corner does not move it), and the band values within the
    # tolerance of it, [lowest, highest]; integers, as pixels are: p > b + t <=> p > floor(b + t).
    background = [sum(sorted(band)[1:3]) / 2 for band in zip(*corners, strict=True)]
    bounds = [(max(0, math.ceil(b - TRIM_TOLERANCE)), min(255, math.floor(b + TRIM_TOLERANCE))) for b in background]
    # One lookup table per band (768 entries): 255 where a value lies outside [lowest, highest], else 0. Pillow maps
    # every pixel through it and finds the box of the non-zero ones in C, in one pass (a server decodes many photos).
    outside = [0 if low <= value <= high else 255 for low, high in bounds for value in range(256)]
    mask = rgb.point(outside)
    box = mask.getbbox()
    if box is None:
        raise NoGarmentError("no garment found: the image is one flat colour")
    edge = background_edge(mask)
    if edge < MIN_BACKGROUND_EDGE:
        raise NoPlainBackground(
            f"no plain background: only {edge:.0%} of the photo's edge has the corners' colour, so no garment can be "
            "cut out of it; photograph one garment alone on a plain, light background"
        )
    left, top, right, bottom = box
    if bottom - top < MIN_GARMENT_SIDE_PX or right - left < MIN_GARMENT_SIDE_PX:
        raise NoGarmentError("no garment found: only a speck differs from the background")
    return left, top, right, bottom


# --- The other way: a Fashion-MNIST image as a product photo, for measuring the conversion above ---------------


def photo_like_jpeg(sample: np.ndarray, scale: int = 6, margins: tuple[int, int] = (30, 50)) -> bytes:
    """A (28, 28) uint8 sample as a photo: dark garment on white, `scale` times larger, white margins, RGB JPEG."""
    big = Image.fromarray(255 - sample).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (big.width + 2 * margins[0], big.height + 2 * margins[1]), "white")
    canvas.paste(big, margins)
    encoded = io.BytesIO()
    canvas.save(encoded, format="JPEG", quality=90)
    return encoded.getvalue()


def varied_photo(sample: np.ndarray, index: int) -> bytes:
    """`sample` (28, 28) as a photo-like JPEG whose size and margins vary with `index` (4-8x, 10-53 px)."""
    return photo_like_jpeg(sample, scale=4 + index % 5, margins=(10 + 7 * (index % 6), 20 + 11 * (index % 4)))
