"""Config: conf/ composes into the committed params.yaml, and bad values are refused early."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from pipeline import config as config_mod
from pipeline.variants import select


@pytest.fixture()
def raw() -> dict[str, Any]:
    return config_mod.compose()


def test_params_yaml_matches_composition_of_conf(raw: dict[str, Any]) -> None:
    committed = yaml.safe_load(config_mod.PARAMS_FILE.read_text())
    assert committed == raw, "params.yaml drifted from conf/: run `make params`"


def test_default_config_has_every_variant(raw: dict[str, Any]) -> None:
    cfg = config_mod.parse_config(raw)
    assert list(cfg.variants) == ["float32", "dynamic_range", "float16", "int8", "int8_full",
                                  "int8_selective", "uint8_full", "int16x8", "qat_int8"]
    assert cfg.variants["int8_selective"].selective
    assert cfg.variants["qat_int8"].source == "qat"
    assert cfg.variants["int8_full"].integer_only
    assert not cfg.variants["int8"].integer_only


def test_overrides_reach_the_typed_config() -> None:
    cfg = config_mod.parse_config(config_mod.compose(["train.epochs=3", "model.filters=[2]"]))
    assert cfg.train.epochs == 3
    assert cfg.model.filters == (2,)


@pytest.mark.parametrize(("path", "value", "message"), [
    (("train", "epohcs"), 3, "config key train.epohcs: Key 'epohcs' not in 'TrainConfig'"),
    (("train", "epochs"), "ten", "config key train.epochs: Value 'ten' of type 'str' could "
                                 "not be converted to Integer"),
    (("benchmark", "xnnpack"), "yes", "config key benchmark.xnnpack"),
    (("train", "epochs"), 0, "train.epochs must be > 0"),
    (("quantization", "calibration_samples"), 0, "calibration_samples must be > 0"),
    (("data", "test_fraction"), 1.5, "data.test_fraction must be between 0 and 1"),
    (("report", "reference"), "float64", "'float64' is not a configured variant"),
    (("quantization", "variants", "int8", "supported_ops"), ["INT4"],
     "unknown value 'INT4'; valid: TFLITE_BUILTINS"),
    (("quantization", "variants", "int8", "inference_input_type"), "int4",
     "inference_input_type: unknown value 'int4'"),
    (("quantization", "variants", "int8", "optimisations"), ["DEFAULT"],
     "quantization.variants.int8.optimisations: Key 'optimisations' not in 'VariantSpec'"),
    (("quantization", "variants", "int8", "per_channel"), "maybe",
     "quantization.variants.int8.per_channel: Value 'maybe' is not a valid bool"),
    (("quantization", "variants", "Bad-Name"), {"source": "float"}, "variant names must match"),
    (("quantization", "variants", "x8"), {"description": "no source"}, "x8.source is required"),
    (("quantization", "variants", "x8"), {"source": "float", "inference_input_type": "int8"},
     "needs representative_data: true"),
    (("quantization", "variants", "int8_selective", "denylist_top_k"), -1,
     "denylist_top_k must be a whole number >= 0"),
    (("quantization", "variants", "int8_selective", "denylist_threshold"), "high",
     "int8_selective.denylist_threshold: Value 'high' of type 'str' could not be converted"),
    (("quantization", "variants", "int8_selective", "denylist_threshold"), -0.5,
     "denylist_threshold must be a number > 0 or null"),
    (("quantization", "variants", "dynamic_range", "denylist_top_k"), 1,
     "need a full-integer variant"),
    (("quantization", "variants", "int8_full", "denylist_top_k"), 1,
     "a selective variant keeps layers in float"),
    (("qat", "layers"), "Dense", "config key qat.layers"),
])
def test_bad_values_are_refused_with_the_key(raw: dict[str, Any], path: tuple[str, ...],
                                             value: Any, message: str) -> None:
    bad = copy.deepcopy(raw)
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config_mod.parse_config(bad)


def test_unknown_variant_lists_the_valid_names(raw: dict[str, Any]) -> None:
    cfg = config_mod.parse_config(raw)
    with pytest.raises(ValueError, match="unknown variant 'int4'; valid: float32, dynamic_range"):
        select(cfg.variants, "int4")


def test_load_params_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        config_mod.load_params(tmp_path / "params.yaml")


def test_config_cli_writes_params_atomically(tmp_path) -> None:
    out = tmp_path / "params.yaml"
    config_mod.main(["train.epochs=2", "--out", str(out)])
    assert yaml.safe_load(out.read_text())["train"]["epochs"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]  # no temp file left


def test_config_cli_refuses_invalid_override_without_writing(tmp_path) -> None:
    out = tmp_path / "params.yaml"
    with pytest.raises(ValueError, match="train.epochs must be > 0"):
        config_mod.main(["train.epochs=0", "--out", str(out)])
    assert not out.exists()
