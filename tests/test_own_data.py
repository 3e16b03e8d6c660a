"""Own labelled images (data/extra): class folders, the one-line refusals that leave every output as it was, the
held-out split, the leak threshold on the real data, and real DVC runs (slow): a clone that adds photos and one
that pulls them, a fresh clone without any, and photos imported from a data registry."""

import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmnist.lib import files
from fmnist.lib.files import CLASS_NAMES, Split, load_split, save_split
from fmnist.lib.idx import read_raw_split
from fmnist.lib.own_data import (
    LEAK_RMS,
    OWN_TEST_SPLIT,
    OwnDataError,
    class_of_folder,
    find_images,
    held_out,
    nearest_test_images,
)
from fmnist.lib.params import load_params
from fmnist.lib.photo import decode
from fmnist.stages.evaluate import own_test_answers, own_test_report
from fmnist.stages.prepare import read_own_image, split_train_val
from fmnist.tools import report_own_images
from tests.helpers import (
    DVC_UP_TO_DATE,
    REPO_ROOT,
    dvc,
    garment_photos,
    git_clone,
    git_commit,
    init_git_dvc,
    run,
    stages_run,
    write_garment_photos,
)

SHIRT, COAT = CLASS_NAMES.index("Shirt"), CLASS_NAMES.index("Coat")
SPLITS = ("train", "val", "test")


# --- Layout ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "label"),
    [("shirt", SHIRT), ("t-shirt-top", 0), ("T-shirt top", 0), ("T-shirt_top", 0), ("ANKLE BOOT", 9)],
)
def test_a_class_folder_may_spell_its_class_name_any_way(folder, label):
    assert class_of_folder(Path("data/extra") / folder) == label


def test_an_unknown_class_folder_names_the_closest_class():
    with pytest.raises(
        OwnDataError, match=r"^data/extra/sneakers: unknown class folder 'sneakers'; did you mean sneaker\?"
    ):
        class_of_folder(Path("data/extra/sneakers"))


def test_images_are_found_in_class_folders_at_any_depth_and_bookkeeping_is_skipped(tmp_path):
    root = tmp_path / "extra"
    for name in ("coat/b.jpg", "coat/a.png", "shop/Ankle boot/c.jpg", "coat/.DS_Store", ".gitignore", "shop.dvc"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (root / "coat" / ".cache").mkdir()  # a hidden folder, and an empty one: skipped
    expected = [(root / "coat/a.png", COAT), (root / "coat/b.jpg", COAT), (root / "shop/Ankle boot/c.jpg", 9)]
    assert find_images(root) == expected
    assert find_images(tmp_path / "absent") == []


def test_held_out_takes_a_seeded_share_of_each_class_with_enough_images():
    labels = np.repeat([SHIRT, COAT, 0], [20, 9, 12]).astype(np.uint8)
    chosen = held_out(labels, 0.2, 10, np.random.default_rng(3))
    assert [int(chosen[labels == label].sum()) for label in (SHIRT, COAT, 0)] == [4, 0, 2]  # coats: 9 < 10
    assert np.array_equal(chosen, held_out(labels, 0.2, 10, np.random.default_rng(3)))
    assert not np.array_equal(chosen, held_out(labels, 0.2, 10, np.random.default_rng(4)))


# --- Leakage -----------------------------------------------------------------------------------------------------


def encoded(image: np.ndarray, scale: float = 1, quality: int | None = None, light: bool = True) -> bytes:
    """A (28, 28) test image as a file: light on black or negated, enlarged (bicubic), PNG or JPEG `quality`."""
    picture = Image.fromarray(image if light else 255 - image)
    if scale != 1:
        picture = picture.resize((round(28 * scale), round(28 * scale)), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    picture.save(out, format="JPEG" if quality else "PNG", **({"quality": quality} if quality else {}))
    return out.getvalue()


def distances(blobs: list[bytes], test_images: np.ndarray, scratch: Path) -> np.ndarray:
    """Each file's distance to its nearest test image, as prepare's leak check measures it."""
    views = []
    for i, blob in enumerate(blobs):
        (scratch / f"{i}.img").write_bytes(blob)
        views.append(read_own_image(scratch / f"{i}.img"))
    _, nearest = nearest_test_images(np.stack(views).reshape(-1, 28, 28), test_images)
    return nearest.reshape(len(blobs), -1).min(axis=1)


def test_copies_of_a_test_image_are_near_it_and_own_photos_are_not(tmp_path, garments):
    test = garments["t10k-images-idx3-ubyte"]
    copies = [encoded(test[7]), encoded(test[7], 4, 75), encoded(test[7], 3, 90, light=False)]
    found = distances([*copies, *garment_photos([SHIRT, COAT], seed=5)], test, tmp_path)
    assert found[0] < 0.5 and max(found[1:3]) < LEAK_RMS < min(found[3:])


@pytest.mark.slow
def test_the_leak_threshold_lies_between_copies_of_real_test_images_and_photos_of_other_images(tmp_path, real_release):
    test, train = real_release["t10k-images-idx3-ubyte"], real_release["train-images-idx3-ubyte"]
    rng = np.random.default_rng(0)
    forms = [(1, 30, True), (2, 75, True), (4, 50, False), (8, 25, True)]  # re-encoded, enlarged, negated
    copies = [encoded(test[i], *form) for i in rng.choice(len(test), 50, replace=False) for form in forms]
    others = [encoded(train[i], 4, 75, light=False) for i in rng.choice(len(train), 300, replace=False)]
    found = distances(copies + others, test, tmp_path)
    assert found[: len(copies)].max() < LEAK_RMS < found[len(copies) :].min()


# --- The stage, on the synthetic release -------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path, tiny_release) -> Path:
    """A directory to run prepare in: the committed params.yaml, data/raw holding 300 + 300 synthetic garments,
    and data/extra as committed (its .gitignore only)."""
    contents, _ = tiny_release
    (tmp_path / files.RAW_DIR).mkdir(parents=True)
    for name, data in contents.items():
        (tmp_path / files.RAW_DIR / name).write_bytes(data)
    shutil.copy(REPO_ROOT / files.PARAMS_FILE, tmp_path / files.PARAMS_FILE)
    (tmp_path / files.EXTRA_DIR).mkdir()
    shutil.copy(REPO_ROOT / files.EXTRA_DIR / ".gitignore", tmp_path / files.EXTRA_DIR / ".gitignore")
    return tmp_path


def prepare(repo: Path) -> subprocess.CompletedProcess:
    """`python -m fmnist.stages prepare` in `repo`, as dvc.yaml runs it."""
    return subprocess.run([sys.executable, "-m", "fmnist.stages", "prepare"], cwd=repo, capture_output=True, text=True)


def counts(repo: Path) -> tuple[dict, dict]:
    """(metrics/data.json: own images in training and held out; plots/own_images.csv: {class: (train, held out)})."""
    totals = json.loads((repo / files.DATA_METRICS_FILE).read_text())
    rows = list(csv.DictReader(io.StringIO((repo / files.OWN_IMAGES_PLOT).read_text())))
    return totals, {row["class"]: (int(row["own_train"]), int(row["own_test"])) for row in rows}


@pytest.mark.parametrize("extra", ["as committed", "absent"])
def test_without_own_images_prepare_writes_exactly_what_the_dataset_alone_gives(workspace, tmp_path, extra):
    if extra == "absent":
        shutil.rmtree(workspace / files.EXTRA_DIR)
    params = load_params(workspace / files.PARAMS_FILE).prepare
    raw = workspace / files.RAW_DIR
    train, val = split_train_val(read_raw_split(raw, "train"), params)
    for name, split in (("train", train), ("val", val), ("test", read_raw_split(raw, "test"))):
        save_split(split, name, tmp_path / "alone")  # what prepare wrote before it read own images
    assert prepare(workspace).returncode == 0
    written = {p.name: p.read_bytes() for p in (workspace / files.PREPARED_DIR).iterdir()}
    assert written == {p.name: p.read_bytes() for p in (tmp_path / "alone").iterdir()}
    totals, per_class = counts(workspace)
    assert totals == {} and set(per_class.values()) == {(0, 0)}  # no own images: no metric to show, zero per class


def test_own_photos_join_the_training_split_converted_and_never_validation_or_test(workspace):
    assert prepare(workspace).returncode == 0
    before = {name: load_split(name, workspace / files.PREPARED_DIR) for name in SPLITS}
    photos = write_garment_photos(workspace / files.EXTRA_DIR / "shirt", SHIRT, 12)
    photos += write_garment_photos(workspace / files.EXTRA_DIR / "shop" / "coat", COAT, 3, seed=1)
    result = prepare(workspace)
    assert result.returncode == 0, result.stderr
    after = {name: load_split(name, workspace / files.PREPARED_DIR) for name in (*SPLITS, OWN_TEST_SPLIT)}
    for name in ("val", "test"):
        assert after[name].images.tobytes() == before[name].images.tobytes()
    grown = len(before["train"].labels)
    assert after["train"].images[:grown].tobytes() == before["train"].images.tobytes()
    # The 15 photos, converted as `fmnist predict` converts them: 2 of the 12 shirts (20%, rounded down) held
    # out; 3 coats are fewer than own_test_min_images, so all of them train.
    own = Split(
        np.concatenate([after["train"].images[grown:], after[OWN_TEST_SPLIT].images])[..., 0],
        np.concatenate([after["train"].labels[grown:], after[OWN_TEST_SPLIT].labels]),
    )
    assert sorted(image.tobytes() for image in own.images) == sorted(decode(p.read_bytes()).tobytes() for p in photos)
    assert list(after[OWN_TEST_SPLIT].labels) == [SHIRT, SHIRT]
    assert sorted(own.labels) == sorted([SHIRT] * 12 + [COAT] * 3)
    totals, per_class = counts(workspace)
    assert totals == {"own_train": 13, "own_test": 2}
    assert (per_class["Shirt"], per_class["Coat"], per_class["Bag"]) == ((10, 2), (3, 0), (0, 0))
    assert "(13 own)" in result.stdout


def truncated(test_images: np.ndarray) -> bytes:
    photo = garment_photos([SHIRT], seed=9)[0]
    return photo[: len(photo) // 2]


def thumbnail(test_images: np.ndarray) -> bytes:
    """A 16x16 photo: a dark 10x12 garment on white."""
    picture = Image.new("RGB", (16, 16), "white")
    picture.paste((40, 40, 90), (3, 2, 13, 14))
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


# (what is added under data/extra; how: a function of the synthetic test images giving its bytes, None for an
# empty folder, a name for a symbolic link to it; the one line)
BAD_DATA = {
    "not an image": (
        "shirt/prices.txt",
        lambda test: b"shirt 19.90\n",
        r"data/extra/shirt/prices.txt: not an image that Pillow can read; replace it with a photo of one garment, "
        "or remove it",
    ),
    "unreadable": ("shirt/cut.jpg", truncated, r"data/extra/shirt/cut.jpg: a damaged or truncated image \(.*\); "),
    "dangling link": (
        "shirt/gone.jpg",
        "missing.jpg",  # a symbolic link to this name, which does not exist
        r"data/extra/shirt/gone.jpg: cannot be read \(no such file or directory\); restore it "
        r"\(dvc checkout, dvc pull\) or remove it",
    ),
    "empty file": ("shirt/empty.jpg", lambda test: b"", r"data/extra/shirt/empty.jpg: an empty file \(0 bytes\); "),
    "unknown class": (
        "shirts/00.jpg",
        lambda test: garment_photos([SHIRT])[0],
        r"data/extra/shirts: unknown class folder 'shirts'; did you mean shirt or t-shirt-top\? rename it to one of "
        "t-shirt-top, ",
    ),
    "too small": (
        "shirt/thumb.png",
        thumbnail,
        r"data/extra/shirt/thumb.png: too small: the garment is only 10x12 pixels once the background is trimmed, "
        r"and needs 24 on its longer side; use a larger photo, or remove it",
    ),
    "no images": (
        "shirt",
        None,
        r"data/extra/shirt: a folder with no images; add images of its class or remove the folder",
    ),
    "test image": (
        "shirt/found-online.jpg",
        lambda test: encoded(test[7], 4, 75),
        r"data/extra/shirt/found-online.jpg: a copy of Fashion-MNIST test image \d+ \(\w.*; \d\.\d grey levels apart, "
        r"copies are below 5\.0\); training on it would inflate the test metrics: remove it",
    ),
    "outside a class folder": (
        "shirt.jpg",
        lambda test: garment_photos([SHIRT])[0],
        r"data/extra/shirt.jpg: not in a class folder; move it into data/extra/<class>/, one of t-shirt-top, ",
    ),
}


def outputs(repo: Path) -> dict[str, tuple[bytes, int]]:
    """{path: (bytes, mtime)} of everything prepare writes."""
    written = [*sorted((repo / files.PREPARED_DIR).iterdir()), repo / files.DATA_METRICS_FILE]
    return {str(p.relative_to(repo)): (p.read_bytes(), p.stat().st_mtime_ns) for p in written}


@pytest.mark.parametrize(("added", "make", "line"), BAD_DATA.values(), ids=BAD_DATA)
def test_bad_data_stops_prepare_with_one_line_and_changes_nothing(workspace, garments, added, make, line):
    write_garment_photos(workspace / files.EXTRA_DIR / "coat", COAT, 3)  # good photos beside the bad one
    assert prepare(workspace).returncode == 0
    before = outputs(workspace)
    target = workspace / files.EXTRA_DIR / added
    target.parent.mkdir(parents=True, exist_ok=True)
    if make is None:
        target.mkdir()
    elif isinstance(make, str):
        target.symlink_to(make)
    else:
        target.write_bytes(make(garments["t10k-images-idx3-ubyte"]))
    result = prepare(workspace)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and re.match(f"error: {line}", result.stderr), result.stderr
    assert outputs(workspace) == before


# --- evaluate's own test metrics ---------------------------------------------------------------------------------


def test_own_test_metrics_count_each_class_and_any_model_can_be_scored_on_them(tmp_path):
    save_split(
        Split(np.zeros((5, 28, 28, 1), np.uint8), np.array([SHIRT] * 4 + [COAT], np.uint8)), OWN_TEST_SPLIT, tmp_path
    )

    def predict(images: np.ndarray) -> np.ndarray:  # a model that calls the last shirt a coat
        return np.eye(10, dtype=np.float32)[[SHIRT, SHIRT, SHIRT, COAT, COAT]] * 0.9 + 0.01

    answers = own_test_answers(predict, tmp_path)
    assert answers is not None
    report = own_test_report(*answers)
    assert (report["images"], report["correct"], report["accuracy"]) == (5, 4, 0.8)
    assert report["classes"] == {"Shirt": {"images": 4, "correct": 3}, "Coat": {"images": 1, "correct": 1}}
    assert own_test_answers(predict, tmp_path / "no-own-test") is None


def test_the_report_compares_two_models_on_the_own_images_image_by_image():
    labels = np.array([SHIRT] * 8 + [COAT] * 2)
    base_right = np.array([False] * 8 + [True] * 2)
    head_right = np.array([True] * 8 + [True, False])  # 8 shirts gained, a coat lost: McNemar p = 0.039
    text = report_own_images.markdown(labels, base_right, head_right, "main")
    assert text.startswith("**10 images: `main` 2 right → workspace 9 right (+0.7000): better** (p = 0.039 < 0.05")
    assert "- 1 right only at `main`, 8 only in the workspace" in text
    assert "| Coat | 2 | 2 | 1 |" in text and "| Shirt | 8 | 0 | 8 |" in text
    assert report_own_images.markdown(labels, head_right, base_right, "main").startswith(
        "**10 images: `main` 9 right → workspace 2 right (-0.7000): worse**"
    )
    few = report_own_images.markdown(labels[:4], np.zeros(4, bool), np.ones(4, bool), "main")  # 0 of 4 -> 4 of 4
    assert few.startswith(
        "**4 images: `main` 0 right → workspace 4 right (+1.0000): inconclusive** (4 images "
        "differ; the test needs 6 to decide)"
    )
    same = report_own_images.markdown(labels, base_right, base_right, "main")
    assert same.startswith("**10 images: `main` 2 right → workspace 2 right (±0.0000): inconclusive**")
    swapped = report_own_images.markdown(
        np.full(12, SHIRT), np.arange(12) < 6, np.arange(12) >= 6, "main"
    )  # 6 each way
    assert swapped.startswith("**12 images: `main` 6 right → workspace 6 right (±0.0000): within noise** (p = 1")


# --- Real DVC runs -----------------------------------------------------------------------------------------------


def md5s(folder: Path) -> dict[str, str]:
    """{file name: MD5} of a folder's files (DVC's checksums)."""
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def shared(repo: Path, tmp_path: Path) -> Path:
    """Give `repo` a bare git origin and a directory DVC remote in `tmp_path`, push everything; the origin."""
    origin = tmp_path / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path)
    run(["git", "remote", "add", "origin", str(origin)], repo)
    dvc(repo, "remote", "add", "-d", "storage", str(tmp_path / "dvc-remote"))
    git_commit(repo, "results and a DVC remote")
    dvc(repo, "push")
    run(["git", "push", "-q", "origin", "main"], repo)
    return origin


@pytest.mark.slow
def test_a_clone_that_adds_photos_trains_on_them_and_another_clone_pulls_the_same(pipeline_copy, tmp_path):
    origin = shared(pipeline_copy, tmp_path)
    before = load_split("train", pipeline_copy / files.PREPARED_DIR)
    a = git_clone(origin, tmp_path / "a")
    dvc(a, "pull")
    photos = write_garment_photos(a / files.EXTRA_DIR / "shirt", SHIRT, 12)
    dvc(a, "add", "data/extra/shirt")
    git_commit(a, "12 photos of our shirts")
    assert stages_run(dvc(a, "repro").stdout) == ["prepare", "train", "calibrate", "evaluate", "export", "plot_errors"]
    after = {name: load_split(name, a / files.PREPARED_DIR) for name in ("train", OWN_TEST_SPLIT)}
    grown = len(before.labels)
    assert after["train"].images[:grown].tobytes() == before.images.tobytes()
    own = np.concatenate([after["train"].images[grown:], after[OWN_TEST_SPLIT].images])[..., 0]
    assert sorted(i.tobytes() for i in own) == sorted(decode(p.read_bytes()).tobytes() for p in photos)
    assert len(after["train"].labels) == grown + 10 and set(after["train"].labels[grown:]) == {SHIRT}
    own_test = json.loads((a / files.OWN_TEST_METRICS_FILE).read_text())
    assert own_test["images"] == 2 and own_test["classes"]["Shirt"]["images"] == 2
    # The report runs main's model (from the DVC cache) and the new one on the held-out photos.
    env = {"PYTHONPATH": str(a / "src"), "XDG_CACHE_HOME": str(tmp_path / "fetched-models")}
    run([sys.executable, "-m", "fmnist.cli", "report", "--base", "origin/main"], a, env=env)
    report = (a / "report.md").read_text()
    assert "### Your own held-out images\n\n**2 images: `origin/main` " in report and "| Shirt | 2 | " in report
    right = re.search(r"\| Shirt \| 2 \| (\d) \| (\d) \|", report)
    assert right and f"workspace {right.group(2)} right" in report  # the table and the headline agree
    own_rows = report.split("### Own images (`dvc metrics diff`)\n\n")[1].split("###")[0]
    assert re.search(r"\| metrics/data\.json +\| own_train +\| - +\| 10 ", own_rows), own_rows
    git_commit(a, "trained on our shirts")
    dvc(a, "push")
    run(["git", "push", "-q", "origin", "main"], a)
    b = git_clone(origin, tmp_path / "b")
    dvc(b, "pull")
    assert md5s(b / files.EXTRA_DIR / "shirt") == md5s(a / files.EXTRA_DIR / "shirt")
    assert md5s(b / files.PREPARED_DIR) == md5s(a / files.PREPARED_DIR)
    assert dvc(b, "status").stdout.strip() == DVC_UP_TO_DATE


@pytest.mark.slow
def test_without_own_images_a_fresh_clone_reproduces_prepare_byte_for_byte(pipeline_copy, tmp_path):
    git_commit(pipeline_copy, "results")
    clone = git_clone(pipeline_copy, tmp_path / "clone")  # no DVC cache, nothing pulled: data/extra is git's
    lock = (clone / files.DVC_LOCK_FILE).read_text()
    assert stages_run(dvc(clone, "repro", "prepare").stdout) == ["fetch", "prepare"]
    assert (clone / files.DVC_LOCK_FILE).read_text() == lock  # the same data/prepared, so train would not rerun
    # and rerunning prepare where everything is reproduced leaves nothing else to do
    assert stages_run(dvc(pipeline_copy, "repro", "--force", "--single-item", "prepare").stdout) == ["prepare"]
    assert stages_run(dvc(pipeline_copy, "repro").stdout) == []


@pytest.mark.slow
def test_photos_imported_from_a_data_registry_and_updated_when_it_moves_on(pipeline_copy, tmp_path):
    registry = tmp_path / "registry"  # a DVC repository of labelled photos, with its own directory remote
    registry.mkdir()
    init_git_dvc(registry)
    dvc(registry, "remote", "add", "-d", "storage", str(tmp_path / "registry-remote"))
    write_garment_photos(registry / "shop" / "shirt", SHIRT, 6)
    dvc(registry, "add", "shop")
    git_commit(registry, "6 shirts")
    dvc(registry, "push")
    dvc(pipeline_copy, "import", str(registry), "shop", "-o", "data/extra/shop")
    git_commit(pipeline_copy, "our shop's photos from the registry")
    dvc(pipeline_copy, "repro", "prepare")
    assert counts(pipeline_copy)[1]["Shirt"] == (6, 0)  # fewer than own_test_min_images: none held out
    write_garment_photos(registry / "shop" / "coat", COAT, 4, seed=1)
    dvc(registry, "add", "shop")
    git_commit(registry, "and 4 coats")
    dvc(registry, "push")
    dvc(pipeline_copy, "update", "data/extra/shop.dvc")
    assert stages_run(dvc(pipeline_copy, "repro", "prepare").stdout) == ["prepare"]
    per_class = counts(pipeline_copy)[1]
    assert (per_class["Shirt"], per_class["Coat"]) == ((6, 0), (4, 0))
