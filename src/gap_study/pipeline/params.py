"""``params.yaml`` as typed, validated settings: the one place every stage reads its knobs from.

``load_params()`` rejects unknown keys, unknown names and out-of-range values before any work
starts, with one message per problem naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)
from ruamel.yaml import YAML, YAMLError

from gap_study.data.splits import steps_per_epoch
from gap_study.nets.architecture import (
    BLUR_SIZES,
    DOWNSAMPLES,
    HEAD_NAMES,
    HEADS_UNDER_TEST,
    PADDINGS,
    DatasetShape,
    ModelConfig,
    total_stride,
)
from gap_study.pipeline.params_errors import (
    check_device,
    check_mechanism,
    check_scheduler,
    describe,
    unique,
)
from gap_study.pipeline.paths import RunId, find_project_root

__all__ = [
    "ComputeParams",
    "DataParams",
    "EvaluateParams",
    "MarginParams",
    "ModelParams",
    "Params",
    "ParamsError",
    "ReportParams",
    "SpeedParams",
    "TrainParams",
    "TuneParams",
    "load_params",
    "or_params_yaml",
    "parse_params",
    "read_yaml",
]

DATA_SETS = ("digits", "mnist_5k", "mnist", "fashion_mnist", "cifar10")
# Data sets without an official test split: the study draws a stratified data.test_fraction.
STUDY_SPLIT = ("digits", "mnist_5k")
# Side of each data set's object before it is placed on the canvas (digits: data.digits_size).
NATIVE_SIZE = {"mnist_5k": 28, "mnist": 28, "fashion_mnist": 28, "cifar10": 32}
# Data sets whose object fills its whole image (a photo): two of them lie apart on a canvas
# only if it has room for both side by side and one pixel between (gap_study.data.two_objects).
FILLS_IMAGE = ("cifar10",)


# A seed every generator the study seeds takes (numpy.random.seed: below 2**32).
Seed = Annotated[int, Field(ge=0, lt=2**32)]


class ParamsError(ValueError):
    """``params.yaml`` (or a notebook's parameters) holds a value the study cannot run with."""


class _Section(BaseModel):
    # no setting of the study is infinite or NaN: refused in every section, not key by key
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class DataParams(_Section):
    name: Literal[DATA_SETS]
    root: str
    download: bool
    canvas: dict[Literal[DATA_SETS], PositiveInt]
    digits_size: PositiveInt
    test_fraction: Annotated[float, Field(gt=0, lt=1)]
    validation_fraction: Annotated[float, Field(gt=0, lt=1)]  # tuning chooses on it
    split_seed: Seed
    max_train: PositiveInt | None
    max_test: PositiveInt | None
    two_objects: NonNegativeInt  # two-object canvases made of test objects; 0 = none

    @model_validator(mode="after")
    def _object_fits(self) -> DataParams:
        if self.name not in self.canvas:
            raise ValueError(f"data.canvas has no entry for data.name = {self.name!r}: add "
                             f"'{self.name}: <side in pixels>' under data.canvas")
        if self.canvas_size < self.object_size:
            raise ValueError(f"data.canvas.{self.name} = {self.canvas_size} is smaller than "
                             f"the {self.object_size}x{self.object_size} {self.name} object: "
                             f"it must be at least {self.object_size}")
        needed = 2 * self.object_size + 1
        if self.two_objects and self.name in FILLS_IMAGE and self.canvas_size < needed:
            raise ValueError(f"data.two_objects = {self.two_objects}: two {self.object_size}x"
                             f"{self.object_size} {self.name} photos fill their images and "
                             f"cannot lie apart on the {self.canvas_size}-pixel canvas "
                             f"(data.canvas.{self.name}; they need {needed}); set "
                             f"data.two_objects: 0 for {self.name}")
        return self

    @property
    def object_size(self) -> int:
        """Side of the object placed on the canvas."""
        return self.digits_size if self.name == "digits" else NATIVE_SIZE[self.name]

    @property
    def canvas_size(self) -> int:
        """Side of the canvas of the chosen data set."""
        return self.canvas[self.name]

    @property
    def shift_room(self) -> int:
        """How far the centred object can move before it touches the border."""
        return (self.canvas_size - self.object_size) // 2

    def check_room(self, key: str, shift: int) -> None:
        """Refuse a shift of ``shift`` pixels (the value of ``key``) that leaves the canvas."""
        if shift > self.shift_room:
            raise ValueError(
                f"{key} = {shift} would push the object off the canvas: a {self.object_size}-"
                f"pixel {self.name} object on a {self.canvas_size}-pixel canvas "
                f"(data.canvas.{self.name}) can move at most {self.shift_room}")


class ModelParams(_Section):
    widths: Annotated[list[PositiveInt], Field(min_length=1)]
    dense_hidden: PositiveInt
    gem_p: PositiveFloat
    lse_r: PositiveFloat
    dropout: Annotated[float, Field(ge=0, lt=1)]
    downsample: Literal[DOWNSAMPLES]
    blur_size: Literal[BLUR_SIZES]
    padding: Literal[PADDINGS]

    def to_config(self, head: str, dataset: DatasetShape) -> ModelConfig:
        """The model of ``head`` with these settings, sized for ``dataset``'s images."""
        return ModelConfig(head=head, in_channels=dataset.in_channels,
                           image_size=dataset.image_size, num_classes=dataset.num_classes,
                           widths=tuple(self.widths), dense_hidden=self.dense_hidden,
                           gem_p=self.gem_p, lse_r=self.lse_r, dropout=self.dropout,
                           downsample=self.downsample, blur_size=self.blur_size,
                           padding=self.padding)


Fraction = Annotated[float, Field(gt=0, le=1)]


class TrainParams(_Section):
    seeds: Annotated[list[Seed], Field(min_length=1), AfterValidator(unique)]
    epochs: PositiveInt
    batch_size: PositiveInt
    schedule: Literal["cosine", "constant"]
    drop_last: bool
    weight_decay: NonNegativeFloat
    validation_batch_size: PositiveInt
    fractions: Annotated[list[Fraction], Field(min_length=1), AfterValidator(unique)]
    shift: Annotated[list[NonNegativeInt], Field(min_length=1), AfterValidator(unique)]

    @property
    def full_fraction(self) -> float:
        """The largest training fraction: the shift ablation and the main comparison use it."""
        return max(self.fractions)

    @property
    def base_shift(self) -> int:
        """The smallest training shift (normally 0, centred): the learning curve uses it."""
        return min(self.shift)

    @property
    def variants(self) -> list[tuple[float, int]]:
        """The ``(fraction, train_shift)`` pairs trained per head and seed: the learning curve
        (every fraction, trained at ``base_shift``) and the augmentation ablation (every
        shift, trained on ``full_fraction``); the pair they share is trained once."""
        curve = [(f, self.base_shift) for f in sorted(self.fractions)]
        ablation = [(self.full_fraction, s) for s in sorted(self.shift)]
        return list(dict.fromkeys(curve + ablation))

    def check_batches(self, train_images: int) -> None:
        """Raise ``ParamsError`` when the smallest training fraction of ``train_images`` makes
        no full batch (``train.drop_last`` drops every smaller one)."""
        smallest = max(1, round(min(self.fractions) * train_images))
        if steps_per_epoch(smallest, self.batch_size, self.drop_last) == 0:
            raise ParamsError(
                f"train.fractions = {min(self.fractions)} keeps {smallest} of {train_images} "
                f"training images, less than one batch of train.batch_size = "
                f"{self.batch_size} with train.drop_last on: raise the fraction, lower the "
                "batch size or set train.drop_last: false")

    def runs(self) -> list[RunId]:
        """Every run a head trains: each of ``variants`` with each seed."""
        return [RunId(fraction, shift, seed) for fraction, shift in self.variants
                for seed in self.seeds]


class TuneParams(_Section):
    """The learning rate of each head, chosen on the validation split (``gap_study.stages.tune``):
    ``learning_rates`` is the starting grid, extended by half-decades within the bounds."""

    learning_rates: Annotated[list[PositiveFloat], Field(min_length=1), AfterValidator(unique)]
    lr_min: PositiveFloat
    lr_max: PositiveFloat
    # 2+: the choice averages over them, and their spread tells a fragile choice
    seeds: Annotated[list[Seed], Field(min_length=2), AfterValidator(unique)]

    @model_validator(mode="after")
    def _bounds_hold_the_grid(self) -> TuneParams:
        low, high = min(self.learning_rates), max(self.learning_rates)
        if not self.lr_min <= low <= high <= self.lr_max:
            raise ValueError(f"tune.lr_min = {self.lr_min:g} and tune.lr_max = {self.lr_max:g} "
                             f"must hold the starting grid tune.learning_rates ({low:g} to "
                             f"{high:g}): set lr_min <= {low:g} and lr_max >= {high:g}")
        return self


class EvaluateParams(_Section):
    # 0 would leave the shift grid one centred image: every head perfectly consistent
    max_shift: PositiveInt
    batch_size: PositiveInt
    seed: Seed


class ComputeParams(_Section):
    """Where and how each run computes (``gap_study.pipeline.engine``). Not part of a run's meaning:
    the sweep pools across it, and only ``threads_per_run`` (which may change the last bits of
    a result) makes a stage rerun."""

    scheduler: Annotated[str, AfterValidator(check_scheduler)]
    threads_per_run: PositiveInt
    workers: PositiveInt | None

    def local_workers(self) -> int:
        """Worker processes of the local cluster: ``workers``, else one per
        ``threads_per_run`` cores (Dask's count, which respects CPU limits of containers)."""
        from dask.system import CPU_COUNT

        return self.workers or max(1, CPU_COUNT // self.threads_per_run)


class SpeedParams(_Section):
    """The interleaved timing of one training step per head (``gap_study.stages.speed``)."""

    rounds: Annotated[int, Field(ge=2)]
    blocks: PositiveInt
    steps: PositiveInt
    warmup: NonNegativeInt


class MarginParams(_Section):
    """Equivalence margins: within them two heads count as equivalent (``docs/study.md``,
    "Statistics and verdicts")."""

    accuracy: Annotated[float, Field(gt=0, lt=1)]  # points of accuracy, as a fraction
    consistency: Annotated[float, Field(gt=0, lt=1)]
    loss: PositiveFloat  # mean cross-entropy, in nats
    time: Annotated[float, Field(gt=0, lt=1)]  # relative: 0.1 = within 10%


class BootstrapParams(_Section):
    """The paired bootstrap of every comparison (``gap_study.report.bootstrap``): how many
    resamples, drawn from which seed."""

    resamples: Annotated[int, Field(ge=1_000)]  # fewer make the tails' p-values too coarse
    seed: Seed


class ReportParams(_Section):
    confidence: Annotated[float, Field(gt=0, lt=1)]
    alpha: Annotated[float, Field(gt=0, lt=0.5)]
    margins: MarginParams
    bootstrap: BootstrapParams
    time_target: Annotated[float, Field(gt=0, le=1)]  # validation accuracy a run must reach


HeadName = Literal[HEAD_NAMES]  # type: ignore[valid-type]


class MechanismParams(_Section):
    """The mechanism experiment (``gap_study.stages.mechanism``): ``heads`` trained as the main runs
    under every ``downsample`` x ``padding`` cell and, when ``train_shift`` is set, once more on
    the ``model`` section's backbone with random training shifts up to ``train_shift``; every
    run scored on the shift grid of ``test_images`` test images (``None``: all). The first
    value of each list is the reference the report measures the others against."""

    heads: Annotated[list[HeadName], Field(min_length=1), AfterValidator(unique)]
    downsample: Annotated[list[Literal[DOWNSAMPLES]], Field(min_length=1),
                          AfterValidator(unique)]
    padding: Annotated[list[Literal[PADDINGS]], Field(min_length=1), AfterValidator(unique)]
    train_shift: PositiveInt | None
    test_images: PositiveInt | None


class Params(_Section):
    data: DataParams
    model: ModelParams
    heads: Annotated[list[HeadName], Field(min_length=1), AfterValidator(unique)]
    train: TrainParams
    tune: TuneParams
    evaluate: EvaluateParams
    mechanism: MechanismParams
    speed: SpeedParams
    report: ReportParams
    device: Annotated[str, AfterValidator(check_device)]
    compute: ComputeParams

    @model_validator(mode="after")
    def _cross_checks(self) -> Params:
        data = self.data
        data.check_room("evaluate.max_shift", self.evaluate.max_shift)
        data.check_room("train.shift", max(self.train.shift))
        if shared := sorted(set(self.tune.seeds) & set(self.train.seeds)):
            raise ValueError(f"tune.seeds has {shared}, also in train.seeds: the learning rates "
                             "must be chosen on runs the study does not report; replace them "
                             "in tune.seeds with seeds outside train.seeds")
        if not any(head in HEADS_UNDER_TEST for head in self.heads):
            raise ValueError(f"heads has no head whose global pooling replaces the dense layers "
                             f"({', '.join(HEADS_UNDER_TEST)}): the study would test no claim; "
                             "add one to heads")
        check_mechanism(self)
        if missing := [h for h in self.mechanism.heads if h not in self.heads]:
            raise ValueError(f"mechanism.heads has {', '.join(missing)}, not in heads: each "
                             "head's learning rate comes from the tune stage, which tunes "
                             "`heads`; add them to heads or drop them from mechanism.heads")
        if data.canvas_size // total_stride(self.model.widths) < 1:
            raise ValueError(f"model.widths has {len(self.model.widths)} blocks, too many for "
                             f"data.canvas.{data.name} = {data.canvas_size}: each block after "
                             "the first halves the map")
        return self


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a ``params.yaml`` mapping; raise ``ParamsError`` listing every problem."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [describe(e, Params) for e in exc.errors()]
        raise ParamsError(f"{source} is not valid:\n  " + "\n  ".join(lines)) from None


def read_yaml(text: str) -> Any:
    """YAML read as DVC reads ``params.yaml`` (ruamel.yaml's safe loader, YAML 1.2): ``1e-3``
    is a number, ``yes`` a string, and a key given twice an error. PyYAML (YAML 1.1) reads
    the first as a string and the second as true, and keeps the last of two keys."""
    return YAML(typ="safe").load(text)  # as dvc.utils.serialize.parse_yaml builds it


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``path``; a missing or unparsable file gets a clear ``ParamsError``."""
    path = Path(path)
    try:
        raw = read_yaml(path.read_text(encoding="utf-8"))
        raw = {} if raw is None else raw  # an empty file: DVC reads no params either
    except FileNotFoundError:
        raise ParamsError(f"{path} not found: run from the project root, "
                          "or pass the path of params.yaml") from None
    except YAMLError as exc:  # the line and the problem, without ruamel's advice to suppress
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"{path} is not valid YAML{where}: "
                          f"{getattr(exc, 'problem', None) or exc}") from None
    return parse_params(raw, source=str(path))


def or_params_yaml(**sections: Any) -> tuple[Any, ...]:
    """The given sections, in order, each ``None`` replaced by that section of the project's
    ``params.yaml`` (validated, as ``run_notebook`` injects it).

    A notebook's ``parameters`` cell sets every section to ``None``: papermill injects the
    values when a stage runs, and a notebook opened in JupyterLab reads them here, so that
    ``params.yaml`` holds the only copy of every default."""
    missing = [name for name, value in sections.items() if value is None]
    if not missing:
        return tuple(sections.values())
    settings = load_params(find_project_root() / "params.yaml").model_dump(mode="json")
    unknown = sorted(set(missing) - set(settings))
    if unknown:
        raise ParamsError(f"params.yaml has no section {', '.join(unknown)}; "
                          f"its sections are: {', '.join(settings)}")
    return tuple(settings[name] if value is None else value for name, value in sections.items())
