"""The not_garments stage: images that are not garments, made offline and seeded, each also as a converted photo,
split into a part to choose with and a part to report on."""

import dataclasses
import json

import numpy as np
import pytest
import yaml

from fmnist.lib import files
from fmnist.lib.params import load_params
from fmnist.stages import not_garments
from tests.helpers import REPO_ROOT

PARAMS = load_params(REPO_ROOT / files.PARAMS_FILE).not_garments


@pytest.fixture(scope="module")
def sets() -> dict[str, np.ndarray]:
    return not_garments.made_sets(dataclasses.replace(PARAMS, images_per_set=60))


def test_every_set_is_28x28_uint8_and_the_fixed_sets_have_their_sizes(sets):
    assert set(sets) == {"digits", "letters", "uniform", "gaussian", "flat"}
    for images in sets.values():
        assert images.shape[1:] == (28, 28) and images.dtype == np.uint8
    assert len(sets["digits"]) == 1797 and len(sets["letters"]) == len(sets["uniform"]) == 60
    assert sorted(np.unique(sets["flat"][:, 0, 0])) == list(range(256))  # blank black (0) to white (255)
    assert all(len(np.unique(image)) == 1 for image in sets["flat"])


def test_digits_and_letters_are_light_strokes_on_black_like_the_dataset(sets):
    for name in ("digits", "letters"):
        images = sets[name].astype(float)
        border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
        assert border.mean() < 5 and images.max(axis=(1, 2)).min() > 100, name  # dark frame, a light stroke in each


def test_sets_are_seeded_and_each_set_draws_from_its_own_stream():
    small = dataclasses.replace(PARAMS, images_per_set=20)
    first, again = not_garments.made_sets(small), not_garments.made_sets(small)
    assert all(np.array_equal(first[name], again[name]) for name in first)
    reseeded = not_garments.made_sets(dataclasses.replace(small, seed=small.seed + 1))
    assert not np.array_equal(first["uniform"], reseeded["uniform"])
    larger = not_garments.made_sets(dataclasses.replace(small, images_per_set=30))
    # The letters' stream is the letters' alone: more noise images would not move a letter.
    assert np.array_equal(larger["letters"][:20], first["letters"])


def test_photos_are_converted_back_and_flat_images_near_white_are_refused(sets):
    photos, refused = not_garments.as_photos(sets["flat"])
    assert photos.shape == (256 - refused.sum(), 28, 28)
    # On its white margins a flat image within 5% of white is one colour: nothing to classify.
    assert refused[:5].all() and not refused[-30:].any()
    digit_photos, refused_digits = not_garments.as_photos(sets["digits"][:20])
    assert not refused_digits.any() and digit_photos.shape == (20, 28, 28)
    assert not np.array_equal(digit_photos, sets["digits"][:20])  # trimmed, rescaled: what a user's file becomes


def test_the_choose_part_holds_the_share_asked_and_the_parts_do_not_overlap():
    mask = not_garments.choose_mask(1797, 0.5, np.random.default_rng(0))
    assert mask.sum() == 898  # round(898.5) rounds to even
    assert not np.array_equal(mask, not_garments.choose_mask(1797, 0.5, np.random.default_rng(1)))


@pytest.mark.slow
def test_the_stage_writes_both_parts_of_every_set_and_what_the_conversion_refused(tmp_path, monkeypatch):
    raw = yaml.safe_load((REPO_ROOT / files.PARAMS_FILE).read_text())
    raw["not_garments"]["images_per_set"] = 30
    (tmp_path / files.PARAMS_FILE).write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    not_garments.main()
    refused = json.loads((files.NOT_GARMENTS_DIR / "refused.json").read_text())
    for name, total in {"digits": 1797, "letters": 30, "uniform": 30, "gaussian": 30, "flat": 256}.items():
        parts = [files.load_npy(files.NOT_GARMENTS_DIR / part / f"{name}.npy") for part in not_garments.PARTS]
        assert sum(len(p) for p in parts) == total and all(p.shape[1:] == (28, 28, 1) for p in parts)
        photos = [files.load_npy(files.NOT_GARMENTS_DIR / part / f"{name}_photo.npy") for part in not_garments.PARTS]
        assert [len(p) for p in photos] == [
            len(arrays) - refused[part][f"{name}_photo"] for arrays, part in zip(parts, not_garments.PARTS, strict=True)
        ]
    assert sum(refused[part]["flat_photo"] for part in not_garments.PARTS) > 0
