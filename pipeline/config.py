"""The lab's config schema: one dataclass per section of `conf/`, and one validation path.

`conf/` is the only home of the values: every key of a section is required here (OmegaConf's
MISSING, no default of the schema's own), so a key a `conf/` file forgets is refused by name,
not filled in with a second opinion (`tests/test_config.py` checks both sides). Validation has
one path: OmegaConf merges the plain mapping into these dataclasses (types, unknown and
missing keys), and each dataclass checks its own values in `__post_init__`. Every error is a
`ValueError` that names the key. Composing `conf/` into `params.yaml` and loading it:
`pipeline.params`. Regenerate `params.yaml` after editing `conf/`:

    python -m pipeline.config [overrides]   # or: make params (runs pipeline.params.main)
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

from pipeline.reads import NO_RERUN
from pipeline.schema import c_identifier, one_of, positive, typed
from pipeline.variants import LABELS, VariantSpec, parse_variants

MISSING = "???"  # OmegaConf's mark of a required value: conf/ sets it, the schema does not


# data.name: where the splits come from (`pipeline.sources` loads each). The last ones come
# with their own test split.
SPLIT_SOURCES = ("npz", "mnist", "fashion_mnist", "cifar10")
DATA_SOURCES = ("digits", "image_folder", *SPLIT_SOURCES)


@dataclasses.dataclass
class NormalizeConfig:
    mean: list[float] = MISSING  # per channel, of [0, 1] pixels
    std: list[float] = MISSING  # per channel, > 0


@dataclasses.dataclass
class DataConfig:
    name: str = MISSING  # source: digits, image_folder, npz, mnist, fashion_mnist, cifar10
    test_fraction: float = MISSING  # share of samples held out for the test split
    val_fraction: float = MISSING  # share of samples used for validation during training
    path: str | None = MISSING  # image folder or .npz file, for name: image_folder / npz
    image_size: list[int] = MISSING  # (h, w) of image_folder's resized images
    channels: int = MISSING  # image_folder: 1 (grey) or 3 (RGB)
    # classes of the task; null: from the labels (a split may lack some: the model decides)
    num_classes: int | None = MISSING
    # The model's input range, from [0, 1] pixels: x * scale + offset ([-1, 1]: 2, -1;
    # 0..255: 255, 0), or per-channel (x - mean) / std with normalize. Applied once, when
    # samples are read: training, calibration, evaluation and the device all see it.
    scale: float = MISSING
    offset: float = MISSING
    normalize: NormalizeConfig | None = MISSING

    def __post_init__(self) -> None:
        one_of("data.name", self.name, DATA_SOURCES)
        if self.num_classes is not None and self.num_classes < 2:
            raise ValueError(f"data.num_classes must be at least 2, got {self.num_classes!r}")
        if self.scale == 0:
            raise ValueError("data.scale must not be 0 (every input would be the offset)")
        if self.normalize is not None:
            n = self.normalize
            if not n.mean or len(n.mean) != len(n.std):
                raise ValueError("data.normalize needs mean and std, one value per channel, "
                                 f"the same count; got mean {n.mean}, std {n.std}")
            for s in n.std:
                positive("data.normalize.std", s)
            if (self.scale, self.offset) != (1.0, 0.0):
                raise ValueError("data.normalize and data.scale/data.offset both set: use "
                                 "one (normalize for per-channel mean and std)")
        for key, value in (("data.test_fraction", self.test_fraction),
                           ("data.val_fraction", self.val_fraction)):
            if not 0 < value < 1:
                raise ValueError(f"{key} must be between 0 and 1, got {value!r}")
        if self.test_fraction + self.val_fraction >= 1:
            raise ValueError("data.test_fraction + data.val_fraction must be below 1")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"data.image_size must be [height, width], got {self.image_size}")
        one_of("data.channels", self.channels, (1, 3))

    def input_range(self, channels: int) -> dict[str, Any]:
        """The model's input range for the store (`pipeline.data.input_range`).

        Raises:
            ValueError: if `normalize` has neither one value nor one per channel.
        """
        from pipeline.data import input_range

        n = self.normalize
        if n and len(n.mean) not in (1, channels):
            raise ValueError(f"data.normalize has {len(n.mean)} values per statistic, the "
                             f"samples {channels} channel(s): give one, or one per channel")
        return input_range(self.scale, self.offset,
                           {"mean": n.mean, "std": n.std} if n else None)


# --- models: each architecture has only the keys it uses ------------------------------------

@dataclasses.dataclass
class ModelConfig:
    """Keys every model has. `name` labels runs and reports; `arch` picks the builder."""

    name: str = MISSING  # label of this model config (run names: <model.name>-<data.name>)
    arch: str = MISSING  # builder in pipeline.produce.models, or `file`


@dataclasses.dataclass
class SmallCnnConfig(ModelConfig):
    filters: list[int] = MISSING  # per conv layer
    dense_units: int = MISSING  # width of the hidden dense layer
    dropout: float = MISSING  # dropout before the classifier

    def __post_init__(self) -> None:
        _check_filters(self.filters)
        positive("model.dense_units", self.dense_units)
        _check_dropout(self.dropout)


@dataclasses.dataclass
class ResnetSmallConfig(ModelConfig):
    filters: list[int] = MISSING  # per block
    dropout: float = MISSING  # dropout before the classifier

    def __post_init__(self) -> None:
        _check_filters(self.filters)
        _check_dropout(self.dropout)


@dataclasses.dataclass
class MobileNetV2Config(ModelConfig):
    alpha: float = MISSING  # width multiplier
    input_size: int = MISSING  # inputs are upsampled (integer factor) to at least this
    weights: str | None = MISSING  # None (random init) or "imagenet" (downloads)

    def __post_init__(self) -> None:
        positive("model.alpha", self.alpha)
        positive("model.input_size", self.input_size)
        one_of("model.weights", self.weights, (None, "imagenet"))


@dataclasses.dataclass
class FileModelConfig(ModelConfig):
    path: str = MISSING  # your .keras, .h5 or SavedModel folder (not trained here)
    safe_mode: bool = MISSING  # refuse Lambda layers' Python code (Keras safe mode)
    # Classes the file's layers need (`module:Class`), imported before loading it
    custom_objects: list[str] = MISSING

    def __post_init__(self) -> None:
        for name in self.custom_objects:
            if not isinstance(name, str) or not re.fullmatch(r"[\w.]+[:.]\w+", name):
                raise ValueError("model.custom_objects: each entry is an importable class, "
                                 f"`module:Class` or `module.Class`; got {name!r}")


@dataclasses.dataclass
class ConvertedModelConfig(ModelConfig):
    """A trained model from another framework, converted by the intake stage into the float
    model every variant starts from (`pipeline.produce.intake`)."""

    path: str = MISSING  # the model: an .onnx file; for torch a .pt2 or `module:function`
    # Conversion fidelity, on the test split against the original runtime: the intake stops
    # when the converted float model's outputs differ by more, or its top-1 agrees less.
    max_abs_diff: float = MISSING
    min_agreement: float = MISSING

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"model.path: give the {self.arch} model to convert")
        positive("model.max_abs_diff", self.max_abs_diff)
        if not 0 <= self.min_agreement <= 1:
            raise ValueError(f"model.min_agreement must be in [0, 1], got {self.min_agreement!r}")


@dataclasses.dataclass
class OnnxModelConfig(ConvertedModelConfig):
    """An ONNX file (`model=onnx`), converted with onnx2tf into a SavedModel."""


@dataclasses.dataclass
class TorchModelConfig(ConvertedModelConfig):
    """A PyTorch model (`model=torch`): a `torch.export` program (`.pt2`), or
    `module:function` returning the module with its weights; converted with litert-torch."""

    layout: str = MISSING  # `nchw` or `nhwc`: the layout of the module's image input

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of("model.layout", self.layout, LAYOUTS)


def _check_filters(filters: list[int]) -> None:
    if not filters:
        raise ValueError("model.filters must list at least one layer width")
    for f in filters:
        positive("model.filters", f)


def _check_dropout(dropout: float) -> None:
    if not 0 <= dropout < 1:
        raise ValueError(f"model.dropout must be in [0, 1), got {dropout!r}")


FROM_FILE = "file"  # model.arch that loads model.path instead of building
ONNX, TORCH = "onnx", "torch"  # model.arch of a model converted by the intake stage
LAYOUTS = ("nchw", "nhwc")
# model.arch -> its schema; pipeline.produce.models has a builder for every other name.
MODEL_SCHEMAS: dict[str, type[ModelConfig]] = {
    "small_cnn": SmallCnnConfig,
    "resnet_small": ResnetSmallConfig,
    "mobilenet_v2": MobileNetV2Config,
    FROM_FILE: FileModelConfig,
    ONNX: OnnxModelConfig,
    TORCH: TorchModelConfig,
}


# --- the other sections -----------------------------------------------------------------------

@dataclasses.dataclass
class TrainConfig:
    epochs: int = MISSING
    batch_size: int = MISSING
    learning_rate: float = MISSING

    def __post_init__(self) -> None:
        positive("train.epochs", self.epochs)
        positive("train.batch_size", self.batch_size)
        positive("train.learning_rate", self.learning_rate)


@dataclasses.dataclass
class QatConfig:
    epochs: int = MISSING
    batch_size: int = MISSING
    learning_rate: float = MISSING
    layers: list[str] = MISSING  # names or classes; []: all

    def __post_init__(self) -> None:
        positive("qat.epochs", self.epochs, allow_zero=True)
        positive("qat.batch_size", self.batch_size)
        positive("qat.learning_rate", self.learning_rate)


@dataclasses.dataclass
class QuantizationConfig:
    calibration_samples: int = MISSING  # representative samples, drawn from the training split
    comparison_samples: int = MISSING  # validation samples every tensor is compared on; 0: none
    # variant name -> fields; each is validated as a `VariantSpec` (pipeline.variants)
    variants: dict[str, Any] = MISSING

    def __post_init__(self) -> None:
        positive("quantization.calibration_samples", self.calibration_samples)
        positive("quantization.comparison_samples", self.comparison_samples, allow_zero=True)


# The interpreter's kernel paths (pipeline.measure.litert): LiteRT's default XNNPACK delegate,
# the built-in optimized kernels (a device without the delegate), the reference kernels.
KERNEL_PATHS = ("xnnpack", "builtin", "reference")


@dataclasses.dataclass
class EvaluateConfig:
    batch_size: int = MISSING  # samples per invoke (models that cannot be resized use 1)
    top_k: int = MISSING  # k of top_k_accuracy
    # Interpreters scoring separate batches at once (each with one thread; not
    # benchmark.num_threads, an interpreter's own threads); None: one per core. How fast,
    # not what: the same batches give the same outputs, so changing it reruns nothing.
    workers: int | None = dataclasses.field(default=MISSING, metadata=NO_RERUN)
    # Kernel paths every variant is evaluated on; the first gives its figures.
    kernel_paths: list[str] = MISSING
    kernel_path_tolerance: float = MISSING  # accuracy difference between paths that is flagged
    # What the variants are scored against: the data's labels, or the reference variant's
    # own predictions (`model`: label-free, for a model without its labelled test set)
    labels: str = MISSING

    def __post_init__(self) -> None:
        positive("evaluate.batch_size", self.batch_size)
        one_of("evaluate.labels", self.labels, LABELS)
        positive("evaluate.top_k", self.top_k)
        if not self.kernel_paths:
            raise ValueError("evaluate.kernel_paths must list at least one kernel path")
        for path in self.kernel_paths:
            one_of("evaluate.kernel_paths", path, KERNEL_PATHS)
        if len(set(self.kernel_paths)) != len(self.kernel_paths):
            raise ValueError(f"evaluate.kernel_paths lists a path twice: {self.kernel_paths}")
        positive("evaluate.kernel_path_tolerance", self.kernel_path_tolerance,
                 allow_zero=True)
        if self.workers is not None:
            positive("evaluate.workers", self.workers)

    @property
    def worker_count(self) -> int:
        """How many interpreters evaluate at once: `workers`, or one per core."""
        return self.workers or os.cpu_count() or 1


@dataclasses.dataclass
class BenchmarkConfig:
    num_threads: list[int] = MISSING  # the interpreter's own threads, one setting each
    xnnpack: list[bool] = MISSING  # with the XNNPACK delegate, without, or both
    warmup_runs: int = MISSING  # warm-up: at least this many invokes ...
    warmup_seconds: float = MISSING  # ... and at least this long
    min_runs: int = MISSING  # timed: at least this many invokes ...
    min_seconds: float = MISSING  # ... and at least this long
    max_seconds: float = MISSING  # stop timing after this long
    memory: bool = MISSING  # peak RSS of each model, measured in a fresh subprocess
    profile: bool = MISSING  # time each operator (after the whole-model timing)
    profile_rounds: int = MISSING  # timed blocks of invokes per operator

    def __post_init__(self) -> None:
        positive("benchmark.profile_rounds", self.profile_rounds)
        for key, values in (("benchmark.num_threads", self.num_threads),
                            ("benchmark.xnnpack", self.xnnpack)):
            if not values:
                raise ValueError(f"{key} must list at least one value")
        for threads in self.num_threads:
            positive("benchmark.num_threads", threads)
        positive("benchmark.warmup_runs", self.warmup_runs)
        positive("benchmark.min_runs", self.min_runs)
        positive("benchmark.warmup_seconds", self.warmup_seconds, allow_zero=True)
        positive("benchmark.min_seconds", self.min_seconds, allow_zero=True)
        positive("benchmark.max_seconds", self.max_seconds)


@dataclasses.dataclass
class NpuTarget:
    """One Ethos-U configuration for Arm Vela, named as in Vela's `Arm/vela.ini`."""

    system_config: str = MISSING  # e.g. Ethos_U55_High_End_Embedded
    memory_mode: str = MISSING  # e.g. Shared_Sram


# Accelerators Vela compiles for (its --accelerator-config values this lab pins configs of).
NPU_ACCELERATORS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256",
                    "ethos-u65-256", "ethos-u65-512", "ethos-u85-128", "ethos-u85-256",
                    "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048")


@dataclasses.dataclass
class FootprintConfig:
    micro: bool = MISSING  # TensorFlow Lite for Microcontrollers: arena, and its kernels' outputs
    micro_samples: int = MISSING  # test samples run on TFLM's kernels (a seeded subset); 0: none
    smallest_arena: bool = MISSING  # also search the smallest arena each model runs in
    gpu: bool = MISSING  # LiteRT's analyzer: GPU delegate compatibility
    # Ethos-U NPUs every integer variant is compiled for (accelerator -> Vela config)
    npu: dict[str, NpuTarget] = MISSING

    def __post_init__(self) -> None:
        positive("footprint.micro_samples", self.micro_samples, allow_zero=True)
        for name in self.npu:
            one_of("footprint.npu", name, NPU_ACCELERATORS)

    @property
    def targets(self) -> tuple[str, ...]:
        """What `report.target` can name: the CPU, the microcontroller, each NPU."""
        return ("cpu", "micro", *self.npu)


@dataclasses.dataclass
class TrackingConfig:
    uri: str = MISSING  # MLflow store; MLFLOW_TRACKING_URI overrides it
    experiment: str = MISSING  # one experiment for all pipeline executions
    registered_model: str = MISSING  # Model Registry name of the @candidate model


PREFERENCES = ("smallest", "fastest")


@dataclasses.dataclass
class ReportConfig:
    reference: str = MISSING  # variant that accuracy_drop, agreement, compression compare to
    max_accuracy_drop: float = MISSING  # accuracy budget (absolute) for the recommendation
    prefer: str = MISSING  # which recommendation becomes the registry's candidate
    target: str = MISSING  # device the budgets apply to: cpu, micro, or a footprint.npu key
    max_arena_bytes: int | None = MISSING  # working memory budget on the target; None: any
    max_flash_bytes: int | None = MISSING  # storage budget on the target; None: any
    # The calibration study's sentence: below which size the activation ranges move by
    # more than this share of their width between draws
    range_spread: float = MISSING

    def __post_init__(self) -> None:
        positive("report.max_accuracy_drop", self.max_accuracy_drop, allow_zero=True)
        positive("report.range_spread", self.range_spread)
        one_of("report.prefer", self.prefer, PREFERENCES)
        for key in ("max_arena_bytes", "max_flash_bytes"):
            if getattr(self, key) is not None:
                positive(f"report.{key}", getattr(self, key))


CALIBRATION_SELECTIONS = ("random", "balanced", "one_class", "confident", "unconfident",
                          "misscaled")


@dataclasses.dataclass
class CalibrationConfig:
    """The calibration study (`pipeline.produce.calibration`): what the representative
    samples' number and choice cost each calibrated variant."""

    variants: list[str] = MISSING  # calibrated variants studied; []: no study
    sizes: list[int] = MISSING  # samples per draw (quantization.calibration_samples is added)
    whole_split: bool = MISSING  # also the whole training split (random, one draw)
    draws: int = MISSING  # seeded draws per size of random, balanced, one_class, misscaled
    selections: list[str] = MISSING  # how the samples are chosen (CALIBRATION_SELECTIONS)
    misscale: float = MISSING  # the misscaled selection: the random draw's inputs times this
    # Processes measuring points at once; None: one per core. How fast, not what.
    workers: int | None = dataclasses.field(default=MISSING, metadata=NO_RERUN)

    def __post_init__(self) -> None:
        for size in self.sizes:
            positive("calibration.sizes", size)
        positive("calibration.draws", self.draws)
        for selection in self.selections:
            one_of("calibration.selections", selection, CALIBRATION_SELECTIONS)
        positive("calibration.misscale", self.misscale)
        if self.workers is not None:
            positive("calibration.workers", self.workers)

    @property
    def worker_count(self) -> int:
        """How many processes measure points at once: `workers`, or one per core."""
        return self.workers or os.cpu_count() or 1


@dataclasses.dataclass
class DeployConfig:
    """The device packages the export stage writes (`pipeline.ship`)."""

    variants: list[str] = MISSING  # variants packaged beside the recommended one; []: only it
    c_name: str = MISSING  # C identifier prefix: <c_name>_data, <c_name>_register_ops, ...
    arena_margin: float = MISSING  # share added to the smallest arena TFLite Micro ran in
    golden_samples: int = MISSING  # test samples in golden/, as the device sees them
    float_tolerance: float = MISSING  # check.py: largest output difference of a float model

    def __post_init__(self) -> None:
        c_identifier("deploy.c_name", self.c_name)
        positive("deploy.arena_margin", self.arena_margin, allow_zero=True)
        positive("deploy.golden_samples", self.golden_samples)
        positive("deploy.float_tolerance", self.float_tolerance, allow_zero=True)


@dataclasses.dataclass
class Config:
    """The whole config: `seed` (conf/config.yaml) and one section per group of `conf/`."""

    seed: int = MISSING
    data: DataConfig = MISSING
    # Validated against MODEL_SCHEMAS[model.arch]; a `ModelConfig` subclass after parsing.
    model: Any = MISSING
    train: TrainConfig = MISSING
    qat: QatConfig = MISSING
    quantization: QuantizationConfig = MISSING
    evaluate: EvaluateConfig = MISSING
    benchmark: BenchmarkConfig = MISSING
    footprint: FootprintConfig = MISSING
    tracking: TrackingConfig = MISSING
    report: ReportConfig = MISSING
    deploy: DeployConfig = MISSING
    calibration: CalibrationConfig = MISSING

    @property
    def variants(self) -> dict[str, VariantSpec]:
        """The validated variants, in config order (set by `parse_config`)."""
        return self.quantization.variants


def parse_model(raw: Any) -> ModelConfig:
    """Validate the `model` section against its architecture's schema.

    Raises:
        ValueError: for an unknown `model.arch` (listing the valid ones) or a bad key/value.
    """
    if not isinstance(raw, Mapping) or "arch" not in raw:
        raise ValueError(f"config key model.arch is required; valid: "
                         f"{', '.join(MODEL_SCHEMAS)}")
    one_of("model.arch", raw["arch"], tuple(MODEL_SCHEMAS))
    return typed(MODEL_SCHEMAS[raw["arch"]], raw, "model")


def parse_config(raw: Mapping[str, Any]) -> Config:
    """Validate a plain config mapping (as in `params.yaml`) and build the typed config.

    Raises:
        ValueError: naming the offending key, and the valid keys or values.
    """
    cfg: Config = typed(Config, raw)
    one_of("report.target", cfg.report.target, cfg.footprint.targets)
    for name in cfg.deploy.variants:
        one_of("deploy.variants", name, tuple(cfg.quantization.variants))
    variants = parse_variants(cfg.quantization.variants, cfg.report.reference)
    for name in cfg.calibration.variants:
        one_of("calibration.variants", name, tuple(variants))
        if not variants[name].calibrated:
            valid = ", ".join(n for n, v in variants.items() if v.calibrated)
            raise ValueError(f"calibration.variants: {name} takes no representative samples "
                             f"(valid: {valid})")
    return dataclasses.replace(
        cfg, model=parse_model(cfg.model),
        quantization=dataclasses.replace(cfg.quantization, variants=variants))


if __name__ == "__main__":  # the documented command; composing conf/ is pipeline.params
    from pipeline import console, params

    console.run(params.main)
