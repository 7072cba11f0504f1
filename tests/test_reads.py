"""The recording view of the config (`pipeline.reads`): what a step reads is what its stage's
params in dvc.yaml must list. Real config, real dvc.yaml; no pipeline run (that is
`test_e2e.py`'s every-key check)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from pipeline import config as config_mod
from pipeline import dvcfile, reads
from pipeline import labels


def test_a_leaf_read_is_recorded_with_its_dotted_key(tiny_cfg: config_mod.Config) -> None:
    view, read = reads.recording(tiny_cfg)
    assert isinstance(view, config_mod.Config) and isinstance(view.evaluate,
                                                              config_mod.EvaluateConfig)
    assert view.evaluate.top_k == tiny_cfg.evaluate.top_k
    assert labels.label_free(view) is False  # reads evaluate.labels through a helper
    assert read.keys == {"evaluate.top_k", "evaluate.labels"} and not read.names


def test_a_property_records_the_fields_it_reads(tiny_cfg: config_mod.Config) -> None:
    from pipeline.variants import KINDS

    kinds = dict(KINDS)
    view, read = reads.recording(tiny_cfg)
    assert KINDS == kinds  # a recording subclass of a kind is not a kind of its own
    assert view.variants["int8"].calibrated  # representative_data, and nothing else of it
    assert read.keys == {"quantization.variants.int8.representative_data"}


def test_a_section_taken_whole_records_every_key(tiny_cfg: config_mod.Config) -> None:
    view, read = reads.recording(tiny_cfg)
    whole = dataclasses.asdict(view.benchmark)
    assert read.keys == {f"benchmark.{k}" for k in whole}
    view, read = reads.recording(tiny_cfg)
    vars(view.train)
    assert read.keys == {"train"}


def test_listing_a_mapping_reads_its_names_and_membership_reads_nothing(
        tiny_cfg: config_mod.Config) -> None:
    view, read = reads.recording(tiny_cfg)
    assert "int8" in view.variants and view.variants["int8"] is not None
    assert not read.keys and not read.names  # a per-variant stage's own entry
    names = list(view.variants)
    assert names == list(tiny_cfg.variants) and read.names == {"quantization.variants"}


def test_keys_that_change_no_output_and_checks_are_not_dependencies(
        tiny_cfg: config_mod.Config) -> None:
    view, read = reads.recording(tiny_cfg)
    assert view.evaluate.worker_count >= 1  # evaluate.workers: how fast, not what
    assert view.variants["int8"].name == "int8"  # its key in the mapping
    with reads.unrecorded():
        assert view.data.name == tiny_cfg.data.name
    assert not read.keys


def test_missing_compares_with_the_listed_params() -> None:
    read = reads.Reads({"evaluate.labels", "quantization.variants.int8.source", "seed"},
                       {"quantization.variants"})
    assert reads.missing(read, ["evaluate", "quantization.variants.int8"]) == [
        "quantization.variants (its names)", "seed"]
    assert reads.missing(read, ["evaluate.labels", "seed", "quantization.variants"]) == []
    assert reads.missing(read, [], whole_file=True) == []
    assert not reads.covers("evaluate.label", "evaluate.labels")  # a key, not a prefix


def test_the_check_reads_the_stage_from_dvc_yaml(tmp_path: Path, monkeypatch) -> None:
    dvc_yaml = ROOT / "dvc.yaml"
    params, deps = reads.declared(dvc_yaml, "quantize", "int8")
    assert "quantization.variants.int8" in params and "models/keras/${item.source}" in deps
    read = reads.Reads({"quantization.variants.int8.optimizations", "evaluate.labels"})
    assert reads.check(read, dvc_yaml, "quantize", "int8", str(tmp_path)) == [
        "evaluate.labels"]
    written = yaml.safe_load((tmp_path / "quantize@int8.json").read_text())
    assert written["missing"] == ["evaluate.labels"]
    # footprint lists every variant's name through its dep on their folders
    assert reads.check(reads.Reads({"seed"}, {"quantization.variants"}), dvc_yaml,
                       "footprint") == []
    monkeypatch.setenv(reads.ENV_STRICT, "1")
    with pytest.raises(RuntimeError, match="evaluate.labels, which dvc.yaml does not list"):
        reads.enforce(read, dvc_yaml, "quantize", "int8")
    monkeypatch.setenv(reads.ENV_STRICT, "0")
    reads.enforce(read, dvc_yaml, "quantize", "int8")  # logged, not raised


def test_the_rerun_table_follows_dvc_yaml(tiny_raw: dict) -> None:
    table = dvcfile.reruns(tiny_raw)
    assert set(table) == set(reads.leaves(tiny_raw))
    assert table["evaluate.workers"] == ["track"]
    assert set(table["quantization.variants.auto.labels"]) == {
        "layer_errors", "quantize@auto", "calibration", "report", "track"}
    assert {n for n in table["seed"] if n.startswith("quantize@")} == {
        f"quantize@{v}" for v in tiny_raw["quantization"]["variants"]}


def test_stale_lock_entries_are_removed(tmp_path: Path, tiny_raw: dict) -> None:
    lock = tmp_path / "dvc.lock"
    lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "prepare": {"cmd": "python stages/prepare.py"},
        "footprint@int8": {"cmd": "python stages/footprint.py int8"},
        "quantize@gone": {"cmd": "python stages/quantize.py gone"}}}))
    removed = dvcfile.prune_lock(lock, tiny_raw["quantization"]["variants"])
    assert removed == ["footprint@int8", "quantize@gone"]
    assert list(yaml.safe_load(lock.read_text())["stages"]) == ["prepare"]
    assert dvcfile.prune_lock(lock, tiny_raw["quantization"]["variants"]) == []


def test_a_view_sent_to_another_process_arrives_as_the_plain_config(tiny_cfg) -> None:
    """A step that hands a section to worker processes (the calibration study's variants)
    pickles it: it arrives as the plain dataclass with every field, and every field sent is
    a read of the step."""
    import pickle

    view, read = reads.recording(tiny_cfg)
    spec = pickle.loads(pickle.dumps(view.variants["int8"]))
    assert type(spec) is type(tiny_cfg.variants["int8"]) and spec == tiny_cfg.variants["int8"]
    assert "quantization.variants.int8.representative_data" in read.keys
    section = pickle.loads(pickle.dumps(view.calibration))
    assert section == tiny_cfg.calibration and "calibration.workers" not in read.keys
