"""What tests import: paths, a tiny model, synthetic Fashion-MNIST-like images, and throwaway pipeline repositories.

Fixtures live in conftest.py; everything here is a plain constant or function (`from tests.helpers import ...`).
"""

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

from fmnist.lib import dvc_cli, process
from fmnist.lib.files import DATA_DIR_ENV
from fmnist.lib.idx import RELEASE_FILES, ReleaseFile, encode_idx, sha256_hex
from fmnist.lib.params import ModelParams
from fmnist.lib.photo import varied_photo
from fmnist.lib.presets import deep_merge
from fmnist.stages.fetch import find_file, local_candidates

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # dvc and python of the environment running the tests
DVC_UP_TO_DATE = "Data and pipelines are up to date."  # what `dvc status` prints when nothing changed

# The smallest network worth building: untrained, it is enough to check everything but accuracy. Tests that need
# augmentation or dropout take a copy: dataclasses.replace(TINY_MODEL, shift_px=1).
TINY_MODEL = ModelParams(
    arch="bn_cnn",
    width=4,
    convs_per_block=(1, 1, 1),
    dense_units=16,
    dropout=0.0,
    shift_px=0,
    erase_prob=0.0,
    precision="auto",
)

# The compute precision of every tiny pipeline (pinned, so that a test does not depend on the CPU it runs on):
# float32, or mixed_bfloat16 with FMNIST_TEST_PRECISION=mixed_bfloat16 (`make test-bf16`), the precision that
# `model.precision: auto` picks on CPUs with AMX. Tests about one precision set it themselves.
TEST_PRECISION = os.environ.get("FMNIST_TEST_PRECISION", "float32")


def bf16_env() -> dict[str, str]:
    """What a process that trains in bfloat16 needs in its environment here: oneDNN off where this environment caps
    it below the AVX512 that bf16 needs on this CPU (`ONEDNN_MAX_CPU_ISA=AVX2 make test`: the train stage refuses
    bf16 there); nothing elsewhere."""
    aborts = process.bf16_abort(process.cpu_flags(), dict(os.environ), platform.machine())
    return {"TF_ENABLE_ONEDNN_OPTS": "0"} if aborts else {}


# The real params.yaml shrunk to a run of seconds: a small network, two epochs of 1,600 training images (100
# steps), enough for seeds to agree within a few points (half as many steps at width 4 left one seed at 0.40 and
# another at 0.67, a spread that made a model at chance level look like seed noise).
TINY_OVERRIDES = {
    "prepare": {"limit": 2000, "val_fraction": 0.2},
    "model": {"width": 8, "dense_units": 32, "precision": TEST_PRECISION},
    "train": {"epochs": 2, "batch_size": 32, "warmup_fraction": 0.0},
    "inference": {"tta": "none"},
    "not_garments": {"images_per_set": 40},
    "plot_errors": {"n_random": 8, "n_misclassified": 8},
}


# --- Synthetic garments: IDX files shaped like the release, without the data package ----------------------------

# One outline per class, polygons as "x,y x,y ..." on a 28x28 grid, and dark lines drawn over some (a coat's
# opening, a shirt's placket): far simpler than the real images, but light garments on black that differ by class.
_OUTLINES = {
    0: ["8,5 11,4 17,4 20,5 25,10 22,13 20,11 20,25 8,25 8,11 6,13 3,10"],  # T-shirt/top
    1: ["9,2 19,2 20,26 16,26 14,9 12,26 8,26"],  # Trouser
    2: ["8,4 11,3 17,3 20,4 24,8 26,22 22,22 20,12 20,24 8,24 8,12 6,22 2,22 4,8"],  # Pullover
    3: ["11,2 17,2 18,8 23,26 5,26 10,8"],  # Dress
    4: ["8,2 11,1 17,1 20,2 24,7 26,25 22,25 20,12 21,27 7,27 8,12 6,25 2,25 4,7"],  # Coat
    5: ["3,20 25,20 25,23 3,23", "6,13 22,13 22,15 6,15", "10,16 20,16 20,18 10,18"],  # Sandal: sole and straps
    6: ["8,4 11,3 17,3 20,4 24,8 25,23 21,23 20,12 20,25 8,25 8,12 7,23 3,23 4,8"],  # Shirt
    7: ["3,14 12,12 17,15 25,17 26,22 3,22"],  # Sneaker
    8: ["4,10 24,10 24,23 22,25 6,25 4,23"],  # Bag
    9: ["6,3 15,3 15,14 25,17 26,23 5,23"],  # Ankle boot
}
_DARK_LINES = {4: ["14,2 14,27"], 6: ["14,4 14,25", "11,3 14,7 17,3"]}
_HANDLES = {8: ["9,10 9,4 19,4 19,10"]}  # light lines: a bag's handle


def _points(text: str, sx: float, sy: float) -> list[tuple[float, float]]:
    """The points of "x,y x,y ..." (28x28 grid) on a 4x larger canvas, stretched by (sx, sy) about the centre."""
    pairs = [tuple(map(float, point.split(","))) for point in text.split()]
    return [(56 + 4 * (x - 14) * sx, 56 + 4 * (y - 14) * sy) for x, y in pairs]


def garment_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, 28, 28) uint8 images of `labels`: each class's outline, stretched and shaded at random (seeded), then
    made as the dataset's images were made: trimmed, the longest edge scaled to 28 pixels, centred, light on black."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(labels), 28, 28), np.uint8)
    for i, label in enumerate(int(label) for label in labels):
        sx, sy = rng.uniform(0.8, 1.0, 2)
        shade = int(rng.integers(140, 240))
        canvas = Image.new("L", (112, 112), 0)
        draw = ImageDraw.Draw(canvas)
        for polygon in _OUTLINES[label]:
            draw.polygon(_points(polygon, sx, sy), fill=shade)
        for line in _DARK_LINES.get(label, []):
            draw.line(_points(line, sx, sy), fill=shade // 3, width=4)
        for line in _HANDLES.get(label, []):
            draw.line(_points(line, sx, sy), fill=shade, width=8)
        garment = canvas.crop(canvas.getbbox())
        scale = 28 / max(garment.size)
        width, height = (max(1, round(side * scale)) for side in garment.size)
        small = Image.new("L", (28, 28), 0)
        small.paste(garment.resize((width, height), Image.Resampling.BOX), ((28 - width) // 2, (28 - height) // 2))
        pixels = np.asarray(small, np.float32)
        garment_mask = np.pad(pixels > 0, 1)
        inside = garment_mask[1:-1, 1:-1] & garment_mask[:-2, 1:-1] & garment_mask[2:, 1:-1]
        inside &= garment_mask[1:-1, :-2] & garment_mask[1:-1, 2:]
        shading = np.where(inside, 1.0, 0.3) * np.linspace(0.85, 1.1, 28)[:, None]  # a dim rim, light from above
        texture = rng.normal(1.0, 0.05, (28, 28))  # the weave
        out[i] = np.clip(pixels * shading * texture, 0, 255).astype(np.uint8) * (pixels > 0)  # background stays 0
    return out


def garment_photos(labels: np.ndarray, seed: int = 0) -> list[bytes]:
    """A shop's own photos of garments of `labels`, as JPEG bytes: drawn garments with a striped print (rows 2-3,
    6-7, ... dimmer), dark on a light background, 4-8x larger than 28x28 with margins.

    The print keeps them 7.7 grey levels or more from every synthetic test garment and 9.6 from every real test
    image (fmnist.lib.own_data's distance; plain drawings come within 3.9 of other drawings of their class), so
    none passes for a copy of a test image.
    """
    drawings = garment_images(np.asarray(labels, dtype=np.uint8), seed)
    striped = drawings * np.where(np.arange(28) // 2 % 2 == 1, 0.55, 1.0)[:, None]
    return [varied_photo(image, i) for i, image in enumerate(striped.astype(np.uint8))]


def write_garment_photos(folder: Path, label: int, count: int, seed: int = 0) -> list[Path]:
    """`count` photos of class `label` (garment_photos) in `folder`, named 00.jpg, 01.jpg, ...; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:02d}.jpg" for i in range(count)]
    for path, photo in zip(paths, garment_photos(np.full(count, label), seed), strict=True):
        path.write_bytes(photo)
    return paths


def garment_release(train: int = 300, test: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    """{release file name: array} like the four release files, with `train` and `test` synthetic garments.

    Every class equally often (as in the release), in a seeded order.
    """
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", train), ("t10k", test)):
        labels = rng.permutation(np.arange(count) % 10).astype(np.uint8)
        arrays[f"{split}-images-idx3-ubyte"] = garment_images(labels, seed=int(rng.integers(2**31)))
        arrays[f"{split}-labels-idx1-ubyte"] = labels
    return {f.name: arrays[f.name] for f in RELEASE_FILES}  # in the release's order


def encoded_release(arrays: dict[str, np.ndarray]) -> tuple[dict[str, bytes], tuple[ReleaseFile, ...]]:
    """The IDX bytes of each array and their checksum table (what fetch verifies against)."""
    contents = {name: encode_idx(array) for name, array in arrays.items()}
    return contents, tuple(ReleaseFile(name, sha256_hex(data), len(data)) for name, data in contents.items())


def real_data_dir() -> Path:
    """Where fetch finds the original release offline ($FMNIST_DATA_DIR, else Debian's copy, which .ci/run installs):
    only tests marked slow use it."""
    for directory in local_candidates(os.environ):
        if all(find_file(directory, f.name) for f in RELEASE_FILES):
            return directory
    pytest.fail(f"the real data is missing: apt-get install dataset-fashion-mnist, or set {DATA_DIR_ENV}")


# --- Commands and throwaway repositories --------------------------------------------------------------------------


def tools_env(env: dict | None = None) -> dict[str, str]:
    """`env` over this environment, with the test environment's tools (dvc, python, gto, fmnist) first on PATH."""
    return {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}


def run(args: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command with the test environment's tools first on PATH; output captured as text."""
    result = subprocess.run(args, cwd=cwd, env={**os.environ, **tools_env(env)}, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def fmnist_cli(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run `fmnist ARGS` in `repo` with the repo's own src/ importable."""
    return run([sys.executable, "-m", "fmnist.cli", *args], repo, check=check, env={"PYTHONPATH": str(repo / "src")})


def dvc(repo: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `dvc ARGS` in `repo` (fmnist.lib.dvc_cli, which runs stages with this environment's tools), with the
    repo's own src/ importable and `env` added."""
    result = dvc_cli.dvc(*args, cwd=repo, env={"PYTHONPATH": str(repo / "src"), **(env or {})}, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def make_pipeline_repo(dest: Path, overrides: dict = TINY_OVERRIDES) -> Path:
    """A fresh git + DVC repository at `dest` holding this project's pipeline with `overrides` applied.

    Run DVC there with `dvc(repo, ...)`, which puts the copied src/ first on PYTHONPATH. Its fetch stage reads
    Debian's copy of the real data: only tests marked slow make one.
    """
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO_ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".gitignore", "data/extra/.gitignore"):  # data/extra: prepare's own-images folder
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / name, dest / name)
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, overrides), sort_keys=False))
    init_git_dvc(dest)
    git_commit(dest, "pipeline")
    return dest


def git_clone(source: Path, dest: Path) -> Path:
    """`git clone` of `source` into `dest`: .dvc/config comes along, the DVC cache and config.local do not."""
    run(["git", "clone", "-q", str(source), str(dest)], source.parent)
    return dest


def init_git_dvc(repo: Path) -> Path:
    """Make `repo` an empty git + DVC repository on branch main, with a git identity and no DVC analytics."""
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["git", "config", "user.email", "test@example.com"], repo)
    run(["git", "config", "user.name", "test"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["dvc", "config", "core.analytics", "false"], repo)
    return repo


def copy_repo(source: Path, dest: Path) -> Path:
    """A private copy of a pipeline repository, whose DVC cache objects are hard links to the source's.

    DVC's cache objects are read-only and content-addressed: DVC replaces or deletes them, never writes into one,
    so sharing them is safe, and it saves copying the cache (the real data's 55 MB among it) for every test.
    Everything else (the workspace, git, .dvc/tmp) is copied.
    """
    objects = str(source / ".dvc" / "cache" / "files") + os.sep

    def link_objects(src: str, dst: str) -> str:
        if src.startswith(objects):
            os.link(src, dst)
            return dst
        return shutil.copy2(src, dst)

    return Path(shutil.copytree(source, dest, symlinks=True, copy_function=link_objects))


def stages_run(dvc_output: str) -> list[str]:
    """The stages a `dvc repro` ran (not those it skipped or restored from the run-cache), in order."""
    return re.findall(r"Running stage '(\w+)'", dvc_output)


def set_param(repo: Path, section: str, key: str, value) -> None:
    """Change one value of `repo`'s params.yaml, as a user editing it would."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def git_commit(repo: Path, message: str) -> None:
    """Stage everything and commit (dvclive needs a commit to exist)."""
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", message], repo)


# --- Calibrated models: what `fmnist predict` and `fmnist serve` need to answer unsure ----------------------------


def calibrate_beside(
    model_path: Path,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    tta: str = "none",
    coverage: float = 0.95,
) -> Path:
    """Fit the calibration of the model file `model_path` as the calibrate stage does (`fitted`: the activation
    statistics on the `train` images and labels, the rest on `val`'s, with the views of `tta`) and save it beside
    the model, where fmnist.lib.calibration.load_for looks; its path. Images are (N, 28, 28, 1) uint8."""
    import tempfile

    from fmnist.lib import files
    from fmnist.lib.files import Split, save_split
    from fmnist.lib.params import InferenceParams
    from fmnist.nn.inference import Predictor
    from fmnist.nn.model import load_model
    from fmnist.stages.calibrate import fitted

    model_path, before = Path(model_path).resolve(), Path.cwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)  # the stage's relative paths: data/prepared, models/model.keras
        try:
            save_split(Split(*val), "val")
            files.MODEL_FILE.parent.mkdir(parents=True)
            shutil.copy(model_path, files.MODEL_FILE)  # `fitted` records the MD5 of this file: the same bytes
            predict = Predictor(load_model(files.MODEL_FILE), InferenceParams(tta=tta, batch_size=256))
            found = fitted(predict, *train, coverage)
        finally:
            os.chdir(before)
    target = model_path.parent / files.CALIBRATION_FILE.name
    found.save(target)
    return target


def calibrated_tiny_model(
    directory: Path, garments: dict[str, np.ndarray], tta: str = "none", params: ModelParams = TINY_MODEL
) -> Path:
    """A tiny model (`params`) trained for a few seconds on 200 synthetic training garments, saved as
    `directory`/model.keras with its calibration (the other 100 as validation) beside it; its path. Its answers have
    the form of a real model's (some garments sure, blank images unsure), not its accuracy."""
    import keras

    from fmnist.nn.model import build_model, save_model
    from fmnist.stages.train import one_hot

    images, labels = garments["train-images-idx3-ubyte"][..., None], garments["train-labels-idx1-ubyte"]
    keras.utils.set_random_seed(0)
    model = build_model(params, seed=0)
    model.compile(keras.optimizers.Adam(0.01), keras.losses.CategoricalCrossentropy(from_logits=True))
    model.fit(images[:200], one_hot(labels[:200]), batch_size=20, epochs=5, verbose=0)
    path = directory / "model.keras"
    save_model(model, path)
    calibrate_beside(path, (images[:200], labels[:200]), (images[200:], labels[200:]), tta)
    return path
