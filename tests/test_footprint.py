"""The device footprint, held to the tools themselves: TFLite Micro's arena and Arm Vela's
SRAM as a direct run of each tool reports them on the same file, MACs equal to Vela's count,
the smallest arena, TFLM's refusals named by op, and budgets that exclude a variant."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline import data
from pipeline.config import Config
from pipeline.measure import footprint, graph, micro, vela
from pipeline.report import content, recommend, summary

U55 = vela.Target("ethos-u55-128", "Ethos_U55_High_End_Embedded", "Shared_Sram")


def _direct_tflm_arena(path: Path) -> int:
    """What TFLM itself reports, run directly in a child process."""
    code = ("from tflite_micro.python.tflite_micro import runtime\n"
            f"it = runtime.Interpreter.from_file({str(path)!r}, arena_size=1 << 22)\n"
            "it.print_allocations()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return int(re.search(r"Arena allocation total (\d+) bytes", proc.stdout + proc.stderr)[1])


def _direct_vela(path: Path, out: Path) -> tuple[int, int]:
    """SRAM (bytes) and MACs as the `vela` command prints them."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "vela"), str(path), "--config", "Arm/vela.ini",
         "--accelerator-config", U55.accelerator, "--system-config", U55.system_config,
         "--memory-mode", U55.memory_mode, "--output-dir", str(out)],
        capture_output=True, text=True, check=True)
    sram_kib = float(re.search(r"Total SRAM used\s+([\d.]+) KiB", proc.stdout)[1])
    macs = int(re.search(r"Neural network macs\s+(\d+) MACs", proc.stdout)[1])
    return round(sram_kib * 1024), macs


@pytest.fixture(scope="module")
def measured(models: dict[str, Path], small_dataset: data.Dataset,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The footprint of a float, a hybrid and two integer variants, as the stage measures it."""
    out = tmp_path_factory.mktemp("footprint")
    x, y = small_dataset.x_test[:20], small_dataset.y_test[:20]
    result = {name: footprint.measure(models[name], x, y, out / name, integer=integer,
                                      npu={U55.accelerator: U55})
              for name, integer in (("float32", False), ("dynamic_range", False),
                                    ("int8_full", True), ("int8", True))}
    for name in ("int8_full", "int8"):  # Vela's report and compiled model are kept
        kept = out / name / "vela" / U55.accelerator
        assert (kept / vela.COMPILED).is_file() and (kept / vela.TABLE).is_file()
    return result


@pytest.mark.parametrize("name", ["int8_full", "int8"])
def test_arena_and_sram_are_what_the_tools_report_directly(
        name: str, measured: dict[str, dict[str, Any]], models: dict[str, Path],
        tmp_path: Path) -> None:
    fp = measured[name]
    assert fp["micro"]["status"] == "ok"
    assert fp["micro"]["arena_bytes"] == _direct_tflm_arena(models[name])
    assert (fp["micro"]["arena_bytes"] == fp["micro"]["arena_persistent_bytes"]
            + fp["micro"]["arena_nonpersistent_bytes"])
    sram, vela_macs = _direct_vela(models[name], tmp_path)
    npu = fp["npu"][U55.accelerator]
    assert npu["status"] == "ok"
    assert npu["sram_bytes"] == sram
    assert npu["macs"] == vela_macs
    # Our own count from the graph equals Vela's, op type by op type; Vela adds MACs only for
    # an activation it could not fuse (run as a 1x1 pool).
    vela_by_type = dict(npu["macs_by_op_type"])
    unfused = vela_by_type.pop("unfused_activations", 0)
    assert fp["macs_by_op_type"] == vela_by_type
    assert fp["macs"] + unfused == vela_macs
    assert 0 < npu["npu_ops_share"] <= 1 and npu["cycles"] > 0


def test_float_models_are_counted_too_and_left_off_the_npu(
        measured: dict[str, dict[str, Any]]) -> None:
    # Vela would report 0 MACs for a float model; the graph count is the integer model's.
    assert measured["float32"]["macs"] == measured["int8_full"]["macs"] > 0
    assert measured["float32"]["npu"][U55.accelerator]["status"] == "skipped"
    assert measured["float32"]["micro"]["status"] == "ok"  # TFLM runs float models


def test_a_model_tflm_cannot_run_is_that_variants_failure_naming_the_op(
        measured: dict[str, dict[str, Any]]) -> None:
    m = measured["dynamic_range"]["micro"]
    assert m["status"] == "failed"
    assert re.search(r"(CONV_2D|FULLY_CONNECTED) \(node \d+\) failed to prepare: .*not supp",
                     m["error"]), m["error"]


def test_the_smallest_arena_runs_and_one_step_less_does_not(
        measured: dict[str, dict[str, Any]], models: dict[str, Path]) -> None:
    m = measured["int8_full"]["micro"]
    smallest = m["smallest_arena_bytes"]
    assert smallest >= m["arena_bytes"] - micro.ALIGNMENT
    assert micro._runs(str(models["int8_full"]), smallest)
    assert not micro._runs(str(models["int8_full"]), smallest - micro.ALIGNMENT)


def test_tflm_is_compared_with_litert_builtin_on_the_same_samples(
        measured: dict[str, dict[str, Any]], models: dict[str, Path],
        small_dataset: data.Dataset) -> None:
    m = measured["int8_full"]["micro"]
    x, y = small_dataset.x_test[:20], small_dataset.y_test[:20]
    builtin = footprint.litert_outputs(models["int8_full"], x)
    assert builtin.dtype == np.int8  # integer outputs: bit-identity is meaningful
    assert m["samples"] == 20
    assert m["builtin_correct"] == int((builtin.argmax(axis=1) == y).sum())
    # The two kernel paths agree to within a few LSB (users report 1-LSB differences).
    assert m["max_abs_diff"] <= 2 and m["agreement"] >= 0.9
    assert m["bit_identical"] == (m["differing_outputs"] == 0)


def test_macs_follow_the_graph(models: dict[str, Path]) -> None:
    g = graph.read(models["float32"])
    convs = [op for op in g.ops if op.type == "CONV_2D"]
    assert convs
    op = convs[0]
    out, w = g.shape(op.outputs[0]), g.shape(op.inputs[1])
    assert graph.op_macs(g, op) == int(np.prod(out)) * w[1] * w[2] * w[3]
    with pytest.raises(ValueError, match="not a TFLite model"):
        graph.read(Path(__file__))


def test_vela_failure_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(vela.VelaError):
        vela.compile_model(bad, U55, tmp_path / "out")


def test_an_arena_budget_excludes_a_variant_and_the_report_says_so(
        stage_results: dict[str, Any], tiny_cfg: Config, models: dict[str, Path],
        small_dataset: data.Dataset, tmp_path: Path) -> None:
    names = ("float32", "int8_full", "dynamic_range")
    x, y = small_dataset.x_test[:10], small_dataset.y_test[:10]
    fps = {n: footprint.measure(models[n], x, y, tmp_path / n, integer=n == "int8_full",
                                npu={U55.accelerator: U55}) for n in names}
    specs = {n: tiny_cfg.variants[n] for n in names}
    rows = summary.summarize(specs, {n: stage_results["records"][n] for n in names},
                             {n: stage_results["evaluations"][n] for n in names},
                             {n: stage_results["benchmarks"][n] for n in names},
                             "float32", 1.0, fps)
    int8_arena = rows["int8_full"]["smallest_arena_bytes"]
    float_arena = rows["float32"]["smallest_arena_bytes"]
    assert int8_arena < float_arena
    assert rows["int8_full"]["ethos-u55-128.sram_bytes"] > 0  # flat, so an MLflow metric
    assert "ethos-u55-128.sram_bytes" in summary.metrics_of(rows["int8_full"])
    # A budget between the two: the float model no longer fits.
    rec = recommend.recommend(rows, 1.0, "smallest", "float32", "cpu",
                              max_arena_bytes=(int8_arena + float_arena) // 2)
    assert "arena" in rec["excluded"]["float32"] and "> budget" in rec["excluded"]["float32"]
    assert "dynamic_range" in rec["excluded"]  # TFLM cannot run it: its arena is unknown
    assert rec["candidate"] == "int8_full" and rec["smallest_arena"] == "int8_full"
    # Below every arena: nothing fits, the reference with a warning.
    none = recommend.recommend(rows, 1.0, "smallest", "float32", "cpu", max_arena_bytes=16)
    assert none["candidate"] == "float32" and any("no variant fits" in w
                                                   for w in none["warnings"])
    # On the NPU, only what Vela compiled fits.
    npu = recommend.recommend(rows, 1.0, "smallest", "float32", "ethos-u55-128")
    assert set(npu["excluded"]) == {"float32", "dynamic_range"}
    doc = content.build(rows, specs, rec, "float32")
    from pipeline.report import render

    text = render.markdown(doc)
    assert "## Fits on the device" in text
    assert "float32` **excluded**: arena" in text


def test_a_model_the_tools_cannot_read_fails_its_footprint_alone(
        tmp_path: Path, tiny_cfg: Config, variant_dirs: Path,
        small_dataset: data.Dataset) -> None:
    import shutil

    from pipeline.artifacts import tflite_path
    from pipeline.layout import Layout
    from pipeline.steps import footprint as footprint_step

    lay = Layout(tmp_path)
    data.save(small_dataset, lay.dataset)
    for name in ("float32", "int8"):
        shutil.copytree(variant_dirs / name, lay.variant(name))
    tflite_path(lay.variant("int8"), "int8").write_bytes(b"not a flatbuffer at all")
    bad = footprint_step.run_variant(tiny_cfg, lay, "int8")
    assert bad["status"] == "failed" and "not a TFLite model" in bad["error"]
    good = footprint_step.run_variant(tiny_cfg, lay, "float32")  # the others go on
    assert good["status"] == "ok" and good["micro"]["status"] == "ok"
    # The row keeps its other figures, none of these, and says why.
    assert summary.device_row(bad) == {"footprint_error": bad["error"]}
