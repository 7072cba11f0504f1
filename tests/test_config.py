"""Config: conf/ composes into the committed params.yaml, and bad values are refused early."""

from __future__ import annotations

import copy
import dataclasses
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


def test_every_configured_variant_is_parsed_in_order(raw: dict[str, Any]) -> None:
    cfg = config_mod.parse_config(raw)
    assert list(cfg.variants) == list(raw["quantization"]["variants"])  # whatever conf/ says
    for name, spec in cfg.variants.items():
        assert spec.name == name
        assert spec.source == raw["quantization"]["variants"][name]["source"]
    assert cfg.variants["int8_selective"].selective
    assert cfg.variants["int8_full"].integer_only
    assert not cfg.variants["int8"].integer_only


def test_a_variant_added_in_config_needs_no_code(raw: dict[str, Any]) -> None:
    raw = copy.deepcopy(raw)
    raw["quantization"]["variants"]["int8_per_tensor"] = {
        "source": "float", "optimizations": ["DEFAULT"], "representative_data": True,
        "per_channel": False}
    spec = config_mod.parse_config(raw).variants["int8_per_tensor"]
    assert spec.full_integer and not spec.per_channel and spec.name == "int8_per_tensor"


def test_overrides_reach_the_typed_config() -> None:
    cfg = config_mod.parse_config(config_mod.compose(["train.epochs=3", "model.filters=[2]"]))
    assert cfg.train.epochs == 3
    assert cfg.model.filters == [2]


@pytest.mark.parametrize("group", sorted(p.stem for p in (config_mod.CONF_DIR / "model").glob(
    "*.yaml")))
def test_each_model_config_has_only_the_keys_its_architecture_uses(group: str) -> None:
    overrides = [f"model={group}"] + (["model.path=/x.keras"] if group == "file" else [])
    raw = config_mod.compose(overrides)
    cfg = config_mod.parse_config(raw)
    assert cfg.model.name == group  # runs are named after the config, not the builder
    schema = config_mod.MODEL_SCHEMAS[raw["model"]["arch"]]
    assert set(raw["model"]) == {f.name for f in dataclasses.fields(schema)}
    assert "unused" not in (config_mod.CONF_DIR / "model" / f"{group}.yaml").read_text()


def test_every_architecture_has_a_builder_and_a_schema() -> None:
    from pipeline.produce import models

    assert set(models.BUILDERS) | {config_mod.FROM_FILE} == set(config_mod.MODEL_SCHEMAS)


def test_strings_that_omegaconf_converts_are_accepted_everywhere(raw: dict[str, Any]) -> None:
    """One validation path: a value Hydra's command line would accept is accepted here too."""
    raw = copy.deepcopy(raw)
    raw["model"]["dropout"] = "0.1"
    raw["train"]["epochs"] = "3"
    cfg = config_mod.parse_config(raw)
    assert cfg.model.dropout == 0.1 and cfg.train.epochs == 3


@pytest.mark.parametrize(("path", "value", "message"), [
    (("train", "epohcs"), 3,
     "unknown config key 'train.epohcs'; valid keys in train: epochs, batch_size, "
     "learning_rate"),
    (("train", "epochs"), "ten", "config key train.epochs: Value 'ten' of type 'str' could "
                                 "not be converted to Integer"),
    (("benchmark", "xnnpack"), "yes", "config key benchmark.xnnpack"),
    (("train", "epochs"), 0, "train.epochs must be > 0"),
    (("quantization", "calibration_samples"), 0, "calibration_samples must be > 0"),
    (("data", "test_fraction"), 1.5, "data.test_fraction must be between 0 and 1"),
    (("data", "name"), "imagenet", "data.name: unknown value 'imagenet'; valid: digits"),
    (("report", "reference"), "float64", "'float64' is not a configured variant"),
    (("report", "prefer"), "cheapest", "report.prefer: unknown value 'cheapest'"),
    (("model", "arch"), "vgg", "model.arch: unknown value 'vgg'; valid: small_cnn"),
    (("model", "alpha"), 0.5, "unknown config key 'model.alpha'; valid keys in model: name, "
                              "arch, filters"),
    (("model", "filters"), [0], "model.filters must be > 0"),
    (("model", "dropout"), 1.5, "model.dropout must be in"),
    (("quantization", "variants", "int8", "supported_ops"), ["INT4"],
     "unknown value 'INT4'; valid: TFLITE_BUILTINS"),
    (("quantization", "variants", "int8", "inference_input_type"), "int4",
     "inference_input_type: unknown value 'int4'"),
    (("quantization", "variants", "int8", "optimisations"), ["DEFAULT"],
     "unknown config key 'quantization.variants.int8.optimisations'"),
    (("quantization", "variants", "int8", "per_channel"), "maybe",
     "quantization.variants.int8.per_channel: Value 'maybe' is not a valid bool"),
    (("quantization", "variants", "int8", "name"), "other", "a variant's name is its key"),
    (("quantization", "variants", "Bad-Name"), {"source": "float"}, "variant names must match"),
    (("quantization", "variants", "x8"), {"description": "no source"}, "x8.source is required"),
    (("quantization", "variants", "x8"), {"source": "float", "inference_input_type": "int8"},
     "needs representative_data: true"),
    (("quantization", "variants", "int8_selective", "denylist_top_k"), -1,
     "denylist_top_k must be >= 0"),
    (("quantization", "variants", "int8_selective", "denylist_threshold"), "high",
     "int8_selective.denylist_threshold: Value 'high' of type 'str' could not be converted"),
    (("quantization", "variants", "int8_selective", "denylist_threshold"), -0.5,
     "denylist_threshold must be > 0"),
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


def test_the_hydra_app_checks_override_keys_against_the_chosen_groups() -> None:
    from pipeline.__main__ import unknown_override

    # `model=file` has `path`; small_cnn, the default, does not.
    assert unknown_override(["model=file", "model.path=m.h5", "data=npz",
                             "data.path=d.npz"]) is None
    assert "valid keys in model: name, arch, path" in unknown_override(
        ["model=file", "model.pth=m.h5"])
    assert "valid keys in model: name, arch, filters" in unknown_override(
        ["-m", "model=small_cnn,tiny_cnn", "model.filterz=1"])
