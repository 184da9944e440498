"""The study file: a dataset, the EDA switch, and a list of named experiments (model x
augmentation x overrides of any training key). Unknown keys are errors naming the valid ones.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import UserError
from ..training.config import TrainConfig, make_config, read_yaml

DATA_KEYS = ("image_size", "channels", "val_fraction", "test_fraction", "classes", "strict", "merge_splits")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")  # experiment names become folder names


class DataSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = "digits"  # built-in name or path, as `visionlab data` takes
    image_size: int | None = Field(None, ge=4, le=4096)  # square side; None: native
    channels: str = "auto"  # auto | 1 | 3
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    classes: list[str] | None = None  # class names replacing the found ones
    strict: bool = False
    merge_splits: bool = False  # pool the source's splits, then split by the fractions (80/10/10)


class AnalysisSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tsne_max_points: int = Field(5000, ge=50)  # stratified subsample of the test set for t-SNE
    feature_map_images: int = Field(4, ge=0)  # test images (and as many errors) whose conv maps are shown


class QuickSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(2, ge=1)  # at most this many epochs per experiment under --quick
    max_train_images: int = Field(2000, ge=10)  # stratified cap on training images under --quick
    tsne_max_points: int = Field(1000, ge=50)


class Experiment(BaseModel):
    """A name plus any training key (model, augment, epochs, lr, freeze, ...)."""

    model_config = ConfigDict(extra="allow")

    name: str

    @field_validator("name")
    @classmethod
    def _folder_safe(cls, name: str) -> str:
        if not NAME.match(name):
            raise ValueError("use letters, digits and - _ . + (it names a folder), at most 64 characters")
        return name


class StudyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "study"  # the study's name: the report title and the default output folder
    data: DataSpec = DataSpec()  # or just a source string: `data: digits`
    eda: bool = True  # exploratory analysis first (the data summary until EDA is available)
    seed: int = 0  # one seed for every experiment's split, initialisation and augmentation
    defaults: dict = {}  # training keys applied to every experiment (an experiment's own keys win)
    experiments: list[Experiment] = Field(min_length=1)
    analysis: AnalysisSpec = AnalysisSpec()
    quick: QuickSpec = QuickSpec()
    # experiments run at once, each in its own process taking whole experiments from a queue:
    # one GPU per worker on a GPU machine, else an equal share of the CPU cores; auto: one per
    # visible GPU, else one per core. The outputs are those of 1 (in this process, in order).
    workers: int | Literal["auto"] = 1

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value):
        return parse_workers(value)

    @model_validator(mode="before")
    @classmethod
    def _data_shorthand(cls, values):
        if isinstance(values, dict) and isinstance(values.get("data"), str):
            values = {**values, "data": {"source": values["data"]}}
        return values

    @model_validator(mode="after")
    def _unique_names(self):
        names = [e.name for e in self.experiments]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"experiment names must be unique; repeated: {', '.join(dupes)}")
        return self


def parse_workers(value) -> int | str:
    """A worker count: a whole number >= 1 or 'auto' (as YAML or a command-line string)."""
    if value == "auto":
        return value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("use a whole number >= 1 or auto")
    return value


def default_experiments() -> list[dict]:
    """What users compare first: an MLP, a CNN from scratch with and without augmentation,
    ResNet-18 (ImageNet weights when available) with and without augmentation."""
    return [
        {"name": "mlp", "model": "mlp"},
        {"name": "cnn", "model": "cnn"},
        {"name": "cnn-augmented", "model": "cnn", "augment": "standard"},
        {"name": "resnet18", "model": "resnet18", "lr": 1e-3},
        {"name": "resnet18-augmented", "model": "resnet18", "augment": "standard", "lr": 1e-3},
    ]


def default_study() -> dict:
    """`visionlab run` with no arguments; studies/digits.yaml is the same study written out.

    1,437 training images of 8x8: the small networks get 30 epochs (about 2 s each; with 10 the
    augmented CNN has not caught up with the plain one), ResNet-18 10 (about 17 s each here).
    Experiments run in parallel workers (auto: one per GPU, else per core): on the 2-core CPU the
    study took 55-58 s against 66-67 s in one process.
    """
    experiments = default_experiments()
    for e in experiments:
        if e["model"] == "resnet18":
            e["epochs"] = 10
    return {"name": "digits", "data": {"source": "digits"}, "eda": True, "seed": 0, "workers": "auto",
            "defaults": {"epochs": 30, "batch_size": 64}, "experiments": experiments}


def _one_line(exc: ValidationError, where: str) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(study)"
    if err["type"] == "extra_forbidden":
        return f"{where}unknown key '{key}'; valid keys here: {_valid_keys(err['loc'])}"
    return f"{where}bad value for '{key}': {err['msg']} (got {err.get('input')!r})"


def _valid_keys(loc) -> str:
    models = {"data": DataSpec, "analysis": AnalysisSpec, "quick": QuickSpec}
    model = models.get(loc[0], StudyConfig) if len(loc) > 1 else StudyConfig
    return ", ".join(model.model_fields)


def load_study(path: str | Path | None, data: str | None = None) -> tuple[StudyConfig, str]:
    """(study, where) from a YAML file (None: the default study); --data replaces the dataset."""
    if path:
        values = read_yaml(path)
    elif data:  # --data with no YAML: the default experiments on that data
        values = {"name": "default", "data": {"source": data}, "defaults": {"epochs": 10},
                  "experiments": default_experiments()}
    else:
        values = default_study()
    where = f"{path}: " if path else ""
    try:
        study = StudyConfig(**values)
    except ValidationError as exc:
        raise UserError(_one_line(exc, where)) from None
    if data:
        study.data.source = data
    from ..data.cache import home_dir
    from ..data.sources import resolve_source
    from ..models import MODELS, TIMM_PREFIX

    resolve_source(study.data.source, home_dir())  # a missing dataset fails now, in one line
    for experiment in study.experiments:  # validate every experiment now, not after hours of training
        config = experiment_config(study, experiment, Path("."), quick=False, where=where)
        if config.model not in MODELS and not config.model.startswith(TIMM_PREFIX):
            raise UserError(f"{where}experiment '{experiment.name}': unknown model '{config.model}'; "
                            f"valid: {', '.join(MODELS)}, timm:<name>")
    return study, where


def experiment_config(study: StudyConfig, experiment: Experiment, out: Path, quick: bool,
                      where: str = "") -> TrainConfig:
    """The resolved training config of one experiment."""
    own = {k: v for k, v in experiment.model_dump().items() if k != "name"}
    for key in ("data", "out", "seed", *DATA_KEYS):
        if key in own or key in study.defaults:
            raise UserError(f"{where}experiment '{experiment.name}': '{key}' is set once for the whole study "
                            "(under data: or at the top level), not per experiment")
    values = {**study.defaults, **own, "data": study.data.source, "seed": study.seed,
              "out": str(out / "experiments" / experiment.name),
              **{k: getattr(study.data, k) for k in DATA_KEYS}}
    if quick:
        values["epochs"] = min(int(values.get("epochs", TrainConfig.model_fields["epochs"].default)),
                               study.quick.epochs)
        cap = values.get("max_train_images")
        values["max_train_images"] = min(cap, study.quick.max_train_images) if cap else study.quick.max_train_images
    return make_config(values, where=f"{where}experiment '{experiment.name}': ")
