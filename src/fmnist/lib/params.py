"""The one typed, validated view of params.yaml: a frozen dataclass per section.

Every key is required and checked (type, range, known name) before a stage does any work, so a typo such as
`dvc exp run -S train.epoch=5` (which DVC would silently add to params.yaml) fails with the key's name.
"""

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from fmnist.lib.files import PARAMS_FILE
from fmnist.lib.process import PipelineError


class ParamsError(PipelineError):
    """params.yaml is missing a key, has an unknown one, or a value of the wrong type or range."""


def _require(ok: bool, key: str, rule: str, value: Any) -> None:
    if not ok:
        raise ParamsError(f"{key} {rule}, got {value!r}; fix it in params.yaml")


@dataclass(frozen=True)
class FetchParams:
    source: str  # "auto", "kaggle", or a directory holding the four IDX files
    kaggle_handle: str  # owner/dataset/versions/N: pinned, so a cached copy resolves offline

    def __post_init__(self) -> None:
        parts = self.kaggle_handle.split("/")
        pinned = len(parts) == 4 and parts[2] == "versions" and parts[3].isdigit()
        _require(pinned, "fetch.kaggle_handle", "must be pinned as owner/dataset/versions/N", self.kaggle_handle)
        _require(bool(self.source.strip()), "fetch.source", "must be auto, kaggle or a directory", self.source)


@dataclass(frozen=True)
class PrepareParams:
    val_fraction: float  # share of the 60,000 training images held out for validation
    seed: int  # seeds the stratified split and the optional subset
    limit: int | None  # keep this many training images (stratified), None = all; for fast runs and tests
    own_test_fraction: float  # share of each class's own images (data/extra) held out to measure the model on them
    own_test_min_images: int  # a class holds own images out only when it has at least this many

    def __post_init__(self) -> None:
        _require(0 < self.val_fraction < 1, "prepare.val_fraction", "must be between 0 and 1", self.val_fraction)
        _require(self.seed >= 0, "prepare.seed", "must be >= 0", self.seed)
        _require(self.limit is None or self.limit >= 100, "prepare.limit", "must be null or >= 100", self.limit)
        # At most half, so that most of a class's own images still train the model.
        _require(
            0 <= self.own_test_fraction <= 0.5,
            "prepare.own_test_fraction",
            "must be between 0 and 0.5",
            self.own_test_fraction,
        )
        _require(self.own_test_min_images >= 2, "prepare.own_test_min_images", "must be >= 2", self.own_test_min_images)


@dataclass(frozen=True)
class ModelParams:
    arch: Literal["reference", "bn_cnn"]  # reference: the reference script's network; bn_cnn: conv-BN-ReLU blocks
    width: int  # channels of the first conv layer (the blocks of fmnist.nn.model multiply it)
    convs_per_block: tuple[int, ...]  # bn_cnn: 3x3 convolutions in each of the three blocks (the first pools)
    dense_units: int  # width of the hidden dense layer
    dropout: float  # dropout rate before the classifier
    shift_px: int  # random translation of up to this many pixels while training, 0 = off
    erase_prob: float  # share of training images with a random rectangle replaced by noise, 0 = off
    # auto: bf16 compute where the machine has bf16 matrix units, else float32 (fmnist.lib.process); the saved
    # model is float32 whatever trained it, so it runs everywhere.
    precision: Literal["auto", "float32", "mixed_bfloat16"]

    def __post_init__(self) -> None:
        _require(1 <= self.width <= 1024, "model.width", "must be in 1..1024", self.width)
        _require(
            len(self.convs_per_block) == 3 and all(1 <= n <= 4 for n in self.convs_per_block),
            "model.convs_per_block",
            "must be a list of 3 integers in 1..4",
            list(self.convs_per_block),
        )
        _require(1 <= self.dense_units <= 8192, "model.dense_units", "must be in 1..8192", self.dense_units)
        _require(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)", self.dropout)
        _require(0 <= self.shift_px <= 8, "model.shift_px", "must be in 0..8", self.shift_px)
        _require(0 <= self.erase_prob <= 1, "model.erase_prob", "must be in [0, 1]", self.erase_prob)


@dataclass(frozen=True)
class EarlyStoppingParams:
    enabled: bool
    monitor: Literal["val_loss", "val_accuracy"]
    patience: int  # epochs without improvement before stopping
    restore_best_weights: bool  # keep the weights of the best epoch, not the last

    def __post_init__(self) -> None:
        _require(self.patience >= 0, "train.early_stopping.patience", "must be >= 0", self.patience)


# none | random: a coin per image and epoch | alternating: a random half in even epochs, the other half in odd ones
Flip = Literal["none", "random", "alternating"]


@dataclass(frozen=True)
class TrainParams:
    seed: int  # seeds weights, shuffling and augmentation
    batch_size: int
    flip: Flip  # which training images are mirrored left-right in each epoch (fmnist.stages.train.mirror_flags)
    epochs: int  # the budget; early stopping may end sooner
    learning_rate: float  # Adam's (peak) learning rate
    schedule: Literal["constant", "cosine"]  # cosine: linear warmup, then cosine decay to 0 at the last epoch
    warmup_fraction: float  # share of the budget (epochs) spent in the linear warmup (cosine only)
    lr_floor: float  # the cosine ends at this fraction of learning_rate instead of 0 (cosine only)
    weight_decay: float  # 0 = off; else each step shrinks weights by learning rate x this (decoupled, as AdamW)
    label_smoothing: float
    deterministic: bool  # TensorFlow op determinism: same machine, same params -> same weights
    early_stopping: EarlyStoppingParams
    distribute: Literal["none", "mirrored", "multi_worker"]  # fmnist.stages.train: one device, local devices, TF_CONFIG
    devices: tuple[str, ...] | None  # mirrored only: device names; null = every local GPU, else the CPU
    peer_timeout_s: float  # multi_worker: how long to wait at start-up for every worker to join

    def __post_init__(self) -> None:
        _require(self.seed >= 0, "train.seed", "must be >= 0", self.seed)
        _require(1 <= self.batch_size <= 65536, "train.batch_size", "must be in 1..65536", self.batch_size)
        _require(1 <= self.epochs <= 1000, "train.epochs", "must be in 1..1000", self.epochs)
        _require(0 < self.learning_rate <= 1, "train.learning_rate", "must be in (0, 1]", self.learning_rate)
        _require(0 <= self.warmup_fraction < 1, "train.warmup_fraction", "must be in [0, 1)", self.warmup_fraction)
        _require(0 <= self.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)", self.label_smoothing)
        _require(0 <= self.lr_floor < 1, "train.lr_floor", "must be in [0, 1)", self.lr_floor)
        _require(0 <= self.weight_decay < 1, "train.weight_decay", "must be in [0, 1)", self.weight_decay)
        _require(
            self.devices is None or (self.distribute == "mirrored" and len(self.devices) > 0),
            "train.devices",
            "must be null, or a non-empty list when train.distribute is mirrored",
            self.devices,
        )
        _require(self.peer_timeout_s > 0, "train.peer_timeout_s", "must be > 0", self.peer_timeout_s)


TTA = Literal["none", "flip", "flip_shift"]  # test-time augmentations (fmnist.nn.inference)


@dataclass(frozen=True)
class InferenceParams:
    tta: TTA  # which views of each image are predicted and averaged
    batch_size: int  # images per call; affects speed and memory only

    def __post_init__(self) -> None:
        _require(1 <= self.batch_size <= 65536, "inference.batch_size", "must be in 1..65536", self.batch_size)


@dataclass(frozen=True)
class NotGarmentsParams:
    seed: int  # draws the letters, the noise and which images go to the choose part
    images_per_set: int  # letters, uniform and Gaussian noise (the digits and flat images are fixed sets)
    choose_fraction: float  # share of each set that methods and thresholds may be chosen with; the rest reports

    def __post_init__(self) -> None:
        _require(self.seed >= 0, "not_garments.seed", "must be >= 0", self.seed)
        _require(
            10 <= self.images_per_set <= 100_000,
            "not_garments.images_per_set",
            "must be in 10..100000",
            self.images_per_set,
        )
        _require(
            0 < self.choose_fraction < 1,
            "not_garments.choose_fraction",
            "must be between 0 and 1",
            self.choose_fraction,
        )


@dataclass(frozen=True)
class UnsureParams:
    coverage: float  # share of validation images answered sure; the rest, the least familiar, are answered unsure

    def __post_init__(self) -> None:
        _require(0.5 <= self.coverage <= 1, "unsure.coverage", "must be in [0.5, 1]", self.coverage)


@dataclass(frozen=True)
class ExportParams:
    float16_min_agreement: float  # write the float16-weight TFLite file only if it answers this share as the model

    def __post_init__(self) -> None:
        _require(
            0 <= self.float16_min_agreement <= 1,
            "export.float16_min_agreement",
            "must be in [0, 1]",
            self.float16_min_agreement,
        )


@dataclass(frozen=True)
class PlotErrorsParams:
    n_random: int  # test images in the random-predictions grid
    n_misclassified: int  # misclassified test images in their grid
    seed: int  # picks which images are shown

    def __post_init__(self) -> None:
        _require(1 <= self.n_random <= 400, "plot_errors.n_random", "must be in 1..400", self.n_random)
        _require(
            1 <= self.n_misclassified <= 400, "plot_errors.n_misclassified", "must be in 1..400", self.n_misclassified
        )
        _require(self.seed >= 0, "plot_errors.seed", "must be >= 0", self.seed)


@dataclass(frozen=True)
class Params:
    fetch: FetchParams
    prepare: PrepareParams
    model: ModelParams
    train: TrainParams
    inference: InferenceParams
    not_garments: NotGarmentsParams
    unsure: UnsureParams
    export: ExportParams
    plot_errors: PlotErrorsParams


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it converted (int -> float for float fields)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return parse_section(tp, value, key)
    if origin in (types.UnionType, typing.Union):  # only `X | None` is used here
        return None if value is None else _convert(args[0], value, key)
    if origin is tuple:  # a YAML list of one type, kept as an immutable tuple
        _require(isinstance(value, list), key, "must be a list", value)
        return tuple(_convert(args[0], item, f"{key}[{i}]") for i, item in enumerate(value))
    if origin is Literal:
        _require(value in args, key, f"must be one of {', '.join(map(str, args))}", value)
        return value
    if tp is float:
        _require(isinstance(value, (int, float)) and not isinstance(value, bool), key, "must be a number", value)
        return float(value)
    # bool is a subclass of int in Python: `epochs: true` must not pass as 1.
    ok = isinstance(value, tp) and (tp is bool or not isinstance(value, bool))
    _require(ok, key, f"must be {'a' if tp is not int else 'an'} {tp.__name__}", value)
    return value


def parse_section(cls: type, raw: Any, where: str) -> Any:
    """Build the dataclass `cls` from the mapping `raw`, naming `where.key` in any error."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{where or 'params.yaml'} must be a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    prefix = f"{where}." if where else ""
    for key in raw:
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean {prefix}{close[0]}?" if close else f"valid keys: {', '.join(names)}"
            raise ParamsError(f"unknown key {prefix}{key} in params.yaml; {hint}")
    for name in names:
        if name not in raw:
            raise ParamsError(f"missing key {prefix}{name} in params.yaml; add it (see the comments in params.yaml)")
    return cls(**{name: _convert(hints[name], raw[name], f"{prefix}{name}") for name in names})


def parse_params(raw: Any) -> Params:
    """Validate a whole params mapping (as loaded from YAML)."""
    if not isinstance(raw, dict):
        raise ParamsError("params.yaml must be a mapping of sections (fetch, prepare, model, ...)")
    return parse_section(Params, raw, "")


def load_params(path: Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml (yaml.safe_load: no arbitrary objects)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path} not found; run the stages from the repository root") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    return parse_params(raw)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested params as DVC names them: {"train": {"epochs": 3}} -> {"train.epochs": 3}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
