"""Config: conf/ composes into the committed params.yaml, conf/ is the only home of the
values (every schema key set there, none defaulted in the schema), and bad or missing values
are refused early."""

from __future__ import annotations

import copy
import dataclasses
import re
import subprocess
import sys
import typing
from typing import Any

import pytest
import yaml

from pipeline import config as config_mod
from pipeline import params as params_mod
from pipeline.reads import leaves
from pipeline.variants import select


@pytest.fixture()
def raw() -> dict[str, Any]:
    return params_mod.compose()


def test_params_yaml_matches_composition_of_conf(raw: dict[str, Any]) -> None:
    committed = yaml.safe_load(params_mod.PARAMS_FILE.read_text())
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
    cfg = config_mod.parse_config(params_mod.compose(["train.epochs=3", "model.filters=[2]"]))
    assert cfg.train.epochs == 3
    assert cfg.model.filters == [2]


@pytest.mark.parametrize("group", sorted(p.stem for p in (params_mod.CONF_DIR / "model").glob(
    "*.yaml")))
def test_each_model_config_has_only_the_keys_its_architecture_uses(group: str) -> None:
    paths = {"file": "/x.keras", "onnx": "/x.onnx", "torch": "/x.pt2"}
    overrides = [f"model={group}"] + ([f"model.path={paths[group]}"] if group in paths else [])
    raw = params_mod.compose(overrides)
    cfg = config_mod.parse_config(raw)
    assert cfg.model.name == group  # runs are named after the config, not the builder
    schema = config_mod.MODEL_SCHEMAS[raw["model"]["arch"]]
    assert set(raw["model"]) == {f.name for f in dataclasses.fields(schema)}
    assert "unused" not in (params_mod.CONF_DIR / "model" / f"{group}.yaml").read_text()


# Every option of every group of conf/ (Hydra's own hydra/ aside): `data=npz`, `model=file`, ...
GROUP_OPTIONS = [f"{group.name}={option.stem}"
                 for group in sorted(params_mod.CONF_DIR.iterdir())
                 if group.is_dir() and group.name != "hydra"
                 for option in sorted(group.glob("*.yaml"))]


def _dataclass_in(hint: Any) -> tuple[type | None, bool]:
    """The dataclass a field's type holds, and whether as a mapping's values
    (`NormalizeConfig | None` -> NormalizeConfig, False; `dict[str, NpuTarget]` -> NpuTarget,
    True)."""
    if typing.get_origin(hint) is dict:
        inner = typing.get_args(hint)[1]
        return (inner, True) if dataclasses.is_dataclass(inner) else (None, False)
    for arg in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(arg):
            return arg, False
    return None, False


def _schema_of(schema: type, raw: dict[str, Any], name: str) -> tuple[type | None, bool]:
    if schema is config_mod.Config and name == "model":  # chosen by model.arch
        return config_mod.MODEL_SCHEMAS[raw["model"]["arch"]], False
    if schema is config_mod.QuantizationConfig and name == "variants":
        return None, False  # the user's entries, each its kind's (pipeline.variants)
    return _dataclass_in(typing.get_type_hints(schema)[name])


def unset_and_unknown(schema: type, raw: dict[str, Any], where: str = "") -> list[str]:
    """Schema fields a composed mapping leaves out, and its keys the schema lacks, at every
    level (sections, model schemas, nested mappings such as footprint.npu's targets)."""
    fields = [f.name for f in dataclasses.fields(schema)]
    found = [f"{where}{k}: not a field of {schema.__name__}" for k in raw if k not in fields]
    found += [f"{where}{k}: not set by conf/" for k in fields if k not in raw]
    for name in fields:
        inner, mapping = _schema_of(schema, raw, name)
        value = raw.get(name)
        if inner is None or not isinstance(value, dict):  # a leaf, or null
            continue
        for key, item in (value.items() if mapping else [(None, value)]):
            if isinstance(item, dict):
                prefix = f"{where}{name}." + (f"{key}." if mapping else "")
                found += unset_and_unknown(inner, item, prefix)
    return found


def all_schemas() -> set[type]:
    """Every dataclass of the config schema: the sections, the model schemas and what they
    nest (variant kinds aside: a variant is the user's entry, with its kind's defaults)."""
    found: set[type] = set()
    todo: list[type] = [config_mod.Config, *config_mod.MODEL_SCHEMAS.values()]
    while todo:
        schema = todo.pop()
        if schema in found:
            continue
        found.add(schema)
        for hint in typing.get_type_hints(schema).values():
            inner, _ = _dataclass_in(hint)
            if inner is not None:
                todo.append(inner)
    return found


@pytest.mark.parametrize("option", GROUP_OPTIONS)
def test_every_schema_key_is_set_by_conf_and_every_conf_key_is_in_the_schema(
        option: str) -> None:
    """Each option of each group, composed: its keys are exactly its schema's fields, at
    every level, and the composition is a valid config (with a value for what the user must
    give, `???` in conf/)."""
    raw = params_mod.compose([option])
    assert not unset_and_unknown(config_mod.Config, raw), unset_and_unknown(
        config_mod.Config, raw)
    given = [f"{key}=/given" for key, value in leaves(raw).items()
             if value == config_mod.MISSING]
    config_mod.parse_config(params_mod.compose([option, *given]))


def test_the_schema_has_no_default_of_its_own() -> None:
    """conf/ is the only home of the values: no schema field has a default that could
    disagree with it (each is required: MISSING)."""
    own = [f"{schema.__name__}.{f.name} = "
           f"{f.default_factory() if f.default is dataclasses.MISSING else f.default!r}"
           for schema in all_schemas() for f in dataclasses.fields(schema)
           if f.default != config_mod.MISSING]
    assert {config_mod.DataConfig, config_mod.NormalizeConfig, config_mod.NpuTarget,
            config_mod.FileModelConfig, config_mod.EvaluateConfig} <= all_schemas()
    assert not own, own


@pytest.mark.parametrize(("change", "message"), [
    (lambda raw: raw["data"].pop("channels"),
     "config key data.channels is required: set it in the conf/data/ file you use, or give "
     "it (data.channels=...)"),
    (lambda raw: raw["data"].__setitem__("path", config_mod.MISSING),  # npz: `path: ???`
     "config key data.path is required: set it in the conf/data/ file you use"),
    (lambda raw: raw["model"].pop("dropout"), "config key model.dropout is required"),
    (lambda raw: raw["evaluate"].pop("workers"), "config key evaluate.workers is required"),
    (lambda raw: raw["footprint"]["npu"]["ethos-u55-128"].pop("memory_mode"),
     "config key footprint.npu.ethos-u55-128.memory_mode is required"),
    (lambda raw: raw.pop("seed"),
     "config key seed is required: set it in conf/config.yaml, or give it (seed=...)"),
])
def test_a_missing_key_is_refused_by_name(raw: dict[str, Any], change: Any,
                                          message: str) -> None:
    bad = copy.deepcopy(raw)
    change(bad)
    with pytest.raises(ValueError, match=re.escape(message)):
        config_mod.parse_config(bad)


def test_every_architecture_has_a_builder_and_a_schema() -> None:
    from pipeline.produce import models

    assert set(models.BUILDERS) | {config_mod.FROM_FILE, config_mod.ONNX, config_mod.TORCH} == \
        set(config_mod.MODEL_SCHEMAS)


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
        params_mod.load_params(tmp_path / "params.yaml")


def test_config_cli_writes_params_atomically(tmp_path) -> None:
    out = tmp_path / "params.yaml"
    params_mod.main(["train.epochs=2", "--out", str(out)])
    assert yaml.safe_load(out.read_text())["train"]["epochs"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]  # no temp file left


def test_config_cli_refuses_invalid_override_without_writing(tmp_path) -> None:
    out = tmp_path / "params.yaml"
    with pytest.raises(ValueError, match="train.epochs must be > 0"):
        params_mod.main(["train.epochs=0", "--out", str(out)])
    assert not out.exists()


def test_the_documented_command_writes_params(tmp_path) -> None:
    """`python -m pipeline.config` (what `make params` runs) is `pipeline.params.main`."""
    out = tmp_path / "params.yaml"
    proc = subprocess.run([sys.executable, "-m", "pipeline.config", "evaluate.workers=1",
                           "--out", str(out)], cwd=params_mod.ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(out.read_text())["evaluate"]["workers"] == 1
    proc = subprocess.run([sys.executable, "-m", "pipeline.config", "~data.channels",
                           "--out", str(out)], cwd=params_mod.ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: config key data.channels is required: set it in the conf/data/ file you use, "
        "or give it (data.channels=...)")


def test_the_hydra_app_checks_override_keys_against_the_chosen_groups() -> None:
    from pipeline.__main__ import unknown_override

    # `model=file` has `path`; small_cnn, the default, does not.
    assert unknown_override(["model=file", "model.path=m.h5", "data=npz",
                             "data.path=d.npz"]) is None
    assert "valid keys in model: name, arch, path" in unknown_override(
        ["model=file", "model.pth=m.h5"])
    assert "valid keys in model: name, arch, filters" in unknown_override(
        ["-m", "model=small_cnn,tiny_cnn", "model.filterz=1"])
