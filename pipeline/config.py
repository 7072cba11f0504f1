"""The lab's configuration: a typed schema, loading of `params.yaml`, and composition of
`conf/` (the source of truth) into `params.yaml`.

Regenerate `params.yaml` after editing `conf/`:

    python -m pipeline.config            # or: make params
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.io import write_text
from pipeline.variants import VariantSpec, parse_variants

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
PARAMS_FILE = ROOT / "params.yaml"


@dataclasses.dataclass
class DataConfig:
    name: str = "digits"  # dataset; `digits` is scikit-learn's bundled 8x8 digits
    test_fraction: float = 0.2  # share of samples held out for the test split
    val_fraction: float = 0.1  # share of samples used for validation during training
    path: str | None = None  # image folder or .npz file, for name: image_folder / npz
    image_size: tuple[int, ...] = (32, 32)  # image_folder: (height, width) after resizing
    channels: int = 1  # image_folder: 1 (grey) or 3 (RGB)


@dataclasses.dataclass
class ModelConfig:
    name: str = "small_cnn"  # architecture builder in pipeline.models
    filters: tuple[int, ...] = (16, 32)  # channels of each conv layer
    dense_units: int = 64  # width of the hidden dense layer
    dropout: float = 0.0  # dropout before the classifier
    alpha: float = 1.0  # mobilenet_v2: width multiplier
    input_size: int = 32  # mobilenet_v2: inputs are upsampled (integer factor) to at least this
    weights: str | None = None  # mobilenet_v2: None (random init) or "imagenet" (downloads)
    path: str | None = None  # file: your .keras, .h5 or SavedModel folder (not trained here)
    safe_mode: bool = True  # file: refuse Lambda layers' Python code (Keras safe mode)


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.001


@dataclasses.dataclass
class QatConfig:
    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 0.0001
    layers: tuple[str, ...] = ()  # layer names or classes to annotate; empty: the whole model


@dataclasses.dataclass
class QuantizationConfig:
    calibration_samples: int = 200  # representative samples, drawn from the training split
    variants: dict[str, VariantSpec] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class EvaluateConfig:
    batch_size: int = 256  # samples per invoke (models that cannot be resized use 1)
    top_k: int = 3  # k of top_k_accuracy


@dataclasses.dataclass
class BenchmarkConfig:
    num_threads: tuple[int, ...] = (1, 2)  # one measurement per thread count, set explicitly
    xnnpack: tuple[bool, ...] = (True,)  # XNNPACK delegate on; add false to measure without
    warmup_runs: int = 1  # warm-up: at least this many invokes ...
    warmup_seconds: float = 0.5  # ... and at least this long
    min_runs: int = 50  # timed: at least this many invokes ...
    min_seconds: float = 1.0  # ... and at least this long
    max_seconds: float = 150.0  # stop timing after this long
    memory: bool = True  # peak RSS of each model, measured in a fresh subprocess


@dataclasses.dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"  # MLflow store; MLFLOW_TRACKING_URI overrides it
    experiment: str = "tflite-quantization-lab"
    registered_model: str = "tflite-quant-lab"  # Model Registry name of the @candidate model


@dataclasses.dataclass
class ReportConfig:
    reference: str = "float32"  # variant that accuracy_drop, agreement, compression compare to
    max_accuracy_drop: float = 0.01  # accuracy budget (absolute) for the recommendation
    prefer: str = "smallest"  # which recommendation becomes the registry's candidate


@dataclasses.dataclass
class Config:
    seed: int = 42
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    qat: QatConfig = dataclasses.field(default_factory=QatConfig)
    quantization: QuantizationConfig = dataclasses.field(default_factory=QuantizationConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    benchmark: BenchmarkConfig = dataclasses.field(default_factory=BenchmarkConfig)
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)

    @property
    def variants(self) -> dict[str, VariantSpec]:
        return self.quantization.variants


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Check `value` against the annotation `tp`; return it converted (lists to tuples)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ValueError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", item_tp, v) for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        return _coerce(key, next(a for a in args if a is not type(None)), value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string, got {value!r}")
        return value
    return value


def _build(cls: Any, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(f"unknown config key {prefix}{unknown[0]}; valid keys here: "
                         f"{', '.join(names)}")
    kw = {}
    for name in names:
        if name in raw and name != "variants":
            kw[name] = _coerce(f"{where}.{name}" if where else name, hints[name], raw[name])
    return cls(**kw)


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def parse_config(raw: Mapping[str, Any]) -> Config:
    """Validate a plain config mapping (as in `params.yaml`) and build the typed config.

    Raises:
        ValueError: naming the offending key, and the valid keys or values.
    """
    check_schema(raw)  # types and keys, by the ConfigStore schema
    cfg: Config = _build(Config, raw, "")  # values, ranges, variant fields
    quant_raw = raw.get("quantization") or {}
    variants = parse_variants(quant_raw.get("variants") or {}, cfg.report.reference)
    cfg = dataclasses.replace(
        cfg, quantization=dataclasses.replace(cfg.quantization, variants=variants))
    for key, value in (("train.epochs", cfg.train.epochs), ("train.batch_size",
                       cfg.train.batch_size), ("qat.batch_size", cfg.qat.batch_size),
                       ("quantization.calibration_samples", cfg.quantization.calibration_samples),
                       ("evaluate.batch_size", cfg.evaluate.batch_size),
                       ("evaluate.top_k", cfg.evaluate.top_k),
                       ("benchmark.min_runs", cfg.benchmark.min_runs),
                       ("benchmark.warmup_runs", cfg.benchmark.warmup_runs),
                       ("train.learning_rate", cfg.train.learning_rate),
                       ("qat.learning_rate", cfg.qat.learning_rate)):
        _positive(key, value)
    _positive("qat.epochs", cfg.qat.epochs, allow_zero=True)
    for key, values in (("benchmark.num_threads", cfg.benchmark.num_threads),
                        ("benchmark.xnnpack", cfg.benchmark.xnnpack)):
        if not values:
            raise ValueError(f"{key} must list at least one value")
    for threads in cfg.benchmark.num_threads:
        _positive("benchmark.num_threads", threads)
    for key, value in (("data.test_fraction", cfg.data.test_fraction),
                       ("data.val_fraction", cfg.data.val_fraction)):
        if not 0 < value < 1:
            raise ValueError(f"{key} must be between 0 and 1, got {value!r}")
    if cfg.data.test_fraction + cfg.data.val_fraction >= 1:
        raise ValueError("data.test_fraction + data.val_fraction must be below 1")
    _positive("report.max_accuracy_drop", cfg.report.max_accuracy_drop, allow_zero=True)
    if cfg.report.prefer not in ("smallest", "fastest"):
        raise ValueError(f"report.prefer: unknown value {cfg.report.prefer!r}; valid: "
                         "smallest, fastest")
    return cfg


SCHEMA_NAME = "lab_schema"


def register_schema() -> None:
    """Store the typed schema (`Config`) in Hydra's ConfigStore as `lab_schema`."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=Config)


def check_schema(raw: Mapping[str, Any]) -> None:
    """Validate a composed config against the ConfigStore schema with OmegaConf: unknown
    keys and wrong types are refused, naming the key.

    Raises:
        ValueError: `config key <key>: <what is wrong>`.
    """
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    register_schema()
    schema = copy.deepcopy(ConfigStore.instance().load(f"{SCHEMA_NAME}.yaml").node)
    try:
        OmegaConf.merge(schema, OmegaConf.create(dict(raw)))
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        message = str(exc).splitlines()[0]
        raise ValueError(f"config key {key}: {message}") from None


def load_params(path: str | Path = PARAMS_FILE) -> tuple[Config, dict[str, Any]]:
    """Load and validate `params.yaml`.

    Returns:
        The typed config and the raw mapping (for logging the resolved config).

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if the file is not a mapping or fails validation.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist; run `make params`")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a YAML mapping")
    return parse_config(raw), raw


def compose(overrides: Sequence[str] = (), config_dir: Path = CONF_DIR,
            config_name: str = "config") -> dict[str, Any]:
    """Compose `conf/` with Hydra (as `dvc exp run` does) into a plain, resolved mapping."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)
    return raw


def render_params(raw: Mapping[str, Any]) -> str:
    """The text of `params.yaml` for a composed config (stable key order, as DVC dumps it)."""
    header = ("# Generated from conf/ by `make params` (python -m pipeline.config); "
              "edit conf/, not this file.\n")
    return header + yaml.safe_dump(dict(raw), sort_keys=False, default_flow_style=False)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. train.epochs=3")
    parser.add_argument("--out", default=str(PARAMS_FILE), help="where to write params.yaml")
    args = parser.parse_args(argv)
    raw = compose(args.overrides)
    parse_config(raw)  # refuse an invalid composition before writing anything
    write_text(args.out, render_params(raw))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from pipeline import cli

    cli.run(main)
