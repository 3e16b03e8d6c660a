"""Photos -> Fashion-MNIST inputs: the dataset's own conversion, on flat shapes and on synthetic garments."""

import io

import numpy as np
import pytest
from PIL import Image

from fmnist.lib.photo import NoGarmentError, photo_like_jpeg, to_fashion_mnist


def garment(size=(60, 40), box=(15, 10, 45, 30), colour=(40, 60, 200), background="white") -> Image.Image:
    """A flat-coloured rectangle (the garment) on a plain background."""
    image = Image.new("RGB", size, background)
    image.paste(Image.new("RGB", (box[2] - box[0], box[3] - box[1]), colour), box[:2])
    return image


def photo_of(sample: np.ndarray) -> Image.Image:
    """A 28x28 Fashion-MNIST sample as a photo-like JPEG (dark on white, upscaled, white margins)."""
    return Image.open(io.BytesIO(photo_like_jpeg(sample)))


def test_output_is_28x28_uint8_light_garment_on_black():
    out = to_fashion_mnist(garment())
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out[:4].max() == 0 and out[-4:].max() == 0  # background negated to black (the garment is 28x19)
    assert out[14, 14] > 100  # the (dark blue) garment is light


def test_the_garment_is_trimmed_and_its_longest_edge_scaled_to_28_centred():
    out = to_fashion_mnist(garment(size=(200, 100), box=(50, 20, 110, 50)))  # a 60x30 garment
    rows, cols = np.nonzero(out > 30)
    assert cols.min() == 0 and cols.max() == 27  # longest edge (width) fills the canvas
    assert 13 <= rows.max() - rows.min() + 1 <= 15  # the other edge keeps the aspect ratio: 30/60 * 28 = 14
    assert abs((rows.min() + rows.max()) / 2 - 13.5) <= 1  # centred vertically


def test_a_sample_survives_the_round_trip_through_a_photo(garments):
    samples = garments["t10k-images-idx3-ubyte"][:100]
    # The same picture, give or take resampling, trimming by a pixel and JPEG. (On real garments expect less: a
    # near-black one, negated onto white paper, fades into the background at its edges.)
    similarity = [np.corrcoef(to_fashion_mnist(photo_of(s)).ravel(), s.ravel())[0, 1] for s in samples]
    assert np.median(similarity) > 0.95 and min(similarity) > 0.85


def test_a_fashion_mnist_sample_passes_through_unchanged(garments):
    sample = garments["t10k-images-idx3-ubyte"][0]
    np.testing.assert_array_equal(to_fashion_mnist(Image.fromarray(sample)), sample)  # no double inversion


def test_transparency_is_composited_onto_white():
    cut_out = Image.new("RGBA", (50, 50), (0, 0, 0, 0))  # transparent *black*: would look like a dark image
    cut_out.paste(Image.new("RGBA", (20, 30), (200, 30, 30, 255)), (15, 10))
    out = to_fashion_mnist(cut_out)
    opaque = to_fashion_mnist(garment(size=(50, 50), box=(15, 10, 35, 40), colour=(200, 30, 30)))
    np.testing.assert_array_equal(out, opaque)


def test_exif_orientation_is_applied():
    upright = garment(size=(60, 90), box=(10, 10, 50, 70))
    stored = upright.rotate(90, expand=True)  # as a camera stores a portrait shot ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... with "rotate 90 degrees clockwise to display"
    encoded = io.BytesIO()
    stored.save(encoded, format="PNG", exif=exif)
    np.testing.assert_array_equal(
        to_fashion_mnist(Image.open(io.BytesIO(encoded.getvalue()))), to_fashion_mnist(upright)
    )


@pytest.mark.parametrize(
    "image, reason",
    [
        (Image.new("RGB", (300, 200), "white"), "one flat colour"),
        (Image.new("RGB", (1, 1), "black"), "only 1x1 pixels"),
        (garment(box=(20, 20, 21, 21)), "only a speck"),
    ],
)
def test_no_garment_is_an_error_not_a_guess(image, reason):
    with pytest.raises(NoGarmentError, match=reason):
        to_fashion_mnist(image)
