"""Models from ONNX and PyTorch (`pipeline.produce.intake`): a PyTorch CNN trained here on
the 8x8 digits in seconds, exported to ONNX by `torch.onnx.export` and to a `torch.export`
program, goes through both intakes with real converters (onnx2tf, litert-torch) and real
runtimes (onnxruntime, torch, LiteRT); the PyTorch one through `dvc repro` with litert-torch's
PT2E variants. Bad input is refused in one line. (The trained MNIST model nobody here wrote,
`pipeline/zoo/`, goes through both on real MNIST in the docs test: docs/models.md.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import TINY_RUN_OVERRIDES
from pipeline import params as params_mod
from pipeline.config import OnnxModelConfig, TorchModelConfig
from pipeline.io import read_json
from pipeline.produce import intake
from test_e2e import project_copy, run, runs


def onnx_cfg(path: Path | str, **kw: Any) -> OnnxModelConfig:
    return OnnxModelConfig(**{"name": "onnx", "arch": "onnx", "path": str(path),
                              "max_abs_diff": 1e-3, "min_agreement": 0.999, **kw})


def torch_cfg(path: Path | str, **kw: Any) -> TorchModelConfig:
    return TorchModelConfig(**{"name": "torch", "arch": "torch", "path": str(path),
                               "layout": "nchw", "max_abs_diff": 1e-3, "min_agreement": 0.999,
                               **kw})


def refusal(fn: Any, *args: Any) -> str:
    """The one-line message `fn(*args)` refuses with."""
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message
    return message


@pytest.fixture(scope="module")
def digits_cnn(dataset: Any) -> Any:
    """A small PyTorch CNN (NCHW, as PyTorch's are) trained on the digits' training split."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 32), torch.nn.ReLU(),
        torch.nn.Linear(32, dataset.num_classes))
    x = torch.from_numpy(np.asarray(dataset.x_train[:], np.float32).transpose(0, 3, 1, 2))
    y = torch.from_numpy(np.asarray(dataset.y_train, np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):  # full batch: about a second
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    xt = torch.from_numpy(np.asarray(dataset.x_test[:], np.float32).transpose(0, 3, 1, 2))
    with torch.no_grad():
        accuracy = float((model(xt).argmax(1).numpy() == dataset.y_test).mean())
    assert accuracy > 0.85, accuracy  # trained for real, not random weights
    return model, accuracy


@pytest.fixture(scope="module")
def digits_files(digits_cnn: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The trained CNN as users pass it on: an ONNX file and a torch.export program."""
    import torch

    model, _ = digits_cnn
    out = tmp_path_factory.mktemp("digits_models")
    sample = torch.zeros(2, 1, 8, 8)
    torch.onnx.export(model, (sample,), str(out / "cnn.onnx"), dynamo=False, opset_version=13,
                      input_names=["image"], output_names=["scores"],
                      dynamic_axes={"image": {0: "N"}, "scores": {0: "N"}})
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.export.save(torch.export.export(model, (sample,), dynamic_shapes=({0: batch},)),
                      str(out / "cnn.pt2"))
    return {"onnx": out / "cnn.onnx", "pt2": out / "cnn.pt2"}


def test_bad_models_are_refused_in_one_line(tmp_path: Path, dataset: Any) -> None:
    import onnx
    from onnx import TensorProto, helper

    text = tmp_path / "notes.onnx"
    text.write_text("not a model\n" * 20)
    assert "is not an ONNX file" in refusal(intake.read_onnx, text)
    assert "does not exist" in refusal(intake.read_onnx, tmp_path / "missing.onnx")

    def graph(op: str, domain: str = "", shape: tuple = ("N", 1, 8, 8)) -> Any:
        node = helper.make_node(op, ["x"], ["y"], name="n0", domain=domain)
        return helper.make_graph(
            [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))])

    newer = helper.make_model(graph("Relu"), opset_imports=[helper.make_opsetid("", 99)])
    onnx.save(newer, tmp_path / "newer.onnx")
    message = refusal(intake.read_onnx, tmp_path / "newer.onnx")
    assert "opset 99" in message and f"up to {onnx.defs.onnx_opset_version()}" in message
    custom = helper.make_model(graph("Fancy", "com.acme"), opset_imports=[
        helper.make_opsetid("", 13), helper.make_opsetid("com.acme", 1)])
    onnx.save(custom, tmp_path / "custom.onnx")
    message = refusal(intake.read_onnx, tmp_path / "custom.onnx")
    assert "cannot convert: Fancy" in message and "'n0'" in message
    wide = helper.make_model(graph("Relu", shape=("N", 3, 32, 32)),
                             opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(wide, tmp_path / "wide.onnx")
    message = refusal(intake.onnx_intake, onnx_cfg(tmp_path / "wide.onnx"), dataset, "[0, 1]",
                      tmp_path)
    assert "(3, 32, 32)" in message and "(8, 8, 1)" in message

    (tmp_path / "junk.pt2").write_bytes(b"\x00" * 64)
    assert "is not a torch.export program" in refusal(intake.load_torch_module,
                                                      str(tmp_path / "junk.pt2"))
    assert "could not build the model" in refusal(intake.load_torch_module, "no_such_mod:build")
    assert "neither a .pt2 file nor" in refusal(intake.load_torch_module, "just_words")
    # Without the extra: the message says how to install it (torch hidden from a fresh
    # interpreter, as in a venv made without EXTRAS=torch).
    probe = ("import sys; sys.modules['torch'] = None\n"
             "from pipeline.produce import intake\n"
             "try:\n    intake.import_torch()\nexcept ValueError as e:\n    print(e)\n")
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True).stdout
    assert "install the torch extra: make venv EXTRAS=torch" in shown


def test_onnx_intake_keeps_the_model_and_stops_a_conversion_beyond_tolerance(
        tmp_path: Path, dataset: Any, digits_cnn: Any, digits_files: dict[str, Path]) -> None:
    from pipeline.produce import model_store

    _, torch_accuracy = digits_cnn
    info = intake.run(onnx_cfg(digits_files["onnx"]), dataset, "[0, 1]", tmp_path / "intake")
    assert info["layout"] == "nchw" and info["opset"] == 13
    assert info["converter"].startswith("onnx2tf ") and info["runtime"].startswith("onnxruntime")
    fid = info["fidelity"]
    assert fid["samples"] == len(dataset.x_test)
    assert fid["agreement"] == 1.0 and 0 <= fid["max_abs_diff"] < 1e-4
    saved = tmp_path / "intake" / intake.SAVED_MODEL
    model, kind, _ = model_store.load_user_model(saved)
    assert kind == "saved_model"
    # the converted model takes the data's NHWC samples and scores as the original did
    assert model_store.accuracy(model, dataset.x_test, dataset.y_test) == pytest.approx(
        torch_accuracy, abs=1e-9)
    assert read_json(tmp_path / "intake" / intake.INFO) == info
    # A tolerance the conversion cannot meet stops it with both figures; nothing is written.
    message = refusal(intake.run, onnx_cfg(digits_files["onnx"], max_abs_diff=1e-12), dataset,
                      "[0, 1]", tmp_path / "stopped")
    assert "max |output difference|" in message and "top-1 agreement 100.0000%" in message
    assert "nothing is quantized" in message
    assert not (tmp_path / "stopped").exists()


@pytest.mark.slow
def test_a_pytorch_model_through_dvc_repro_with_litert_torch_variants(
        tmp_path: Path, digits_cnn: Any, digits_files: dict[str, Path]) -> None:
    _, torch_accuracy = digits_cnn
    variants = ("float32", "int8", "qat_int8", "aeq_int8_static", "pt2e_int8_static",
                "pt2e_int8_dynamic")
    raw = params_mod.compose([*TINY_RUN_OVERRIDES, "model=torch",
                              f"model.path={digits_files['pt2']}", "quantization=torch",
                              "calibration.variants=[pt2e_int8_static]"])
    raw["quantization"]["variants"] = {v: raw["quantization"]["variants"][v] for v in variants}
    project = project_copy(tmp_path / "lab")
    (project / "params.yaml").write_text(params_mod.render_params(raw))
    run([str(Path(sys.executable).parent / "dvc"), "repro"], project)

    info = read_json(project / "models" / "intake" / intake.INFO)
    assert info["format"] == "torch" and info["fidelity"]["agreement"] == 1.0
    float_metrics = read_json(project / "models" / "keras" / "float_metrics.json")
    assert float_metrics["test_accuracy"] == pytest.approx(torch_accuracy, abs=1e-9)
    summary = read_json(project / "reports" / "summary.json")
    status = {v: r["status"] for v, r in summary.items()}
    assert status == {"float32": "ok", "int8": "failed", "qat_int8": "failed",
                      "aeq_int8_static": "ok", "pt2e_int8_static": "ok",
                      "pt2e_int8_dynamic": "ok"}, status
    # the TFLite converter needs a TensorFlow model: declined with that reason
    assert "came from PyTorch" in summary["int8"]["error"]
    assert "prepare_qat_pt2e" in summary["qat_int8"]["error"]
    ref = summary["float32"]
    assert ref["conversion_agreement"] == 1.0 and ref["conversion_max_abs_diff"] < 1e-3
    assert "conversion_agreement" not in summary["aeq_int8_static"]
    for v in ("aeq_int8_static", "pt2e_int8_static", "pt2e_int8_dynamic"):
        assert summary[v]["size_bytes"] < 0.5 * ref["size_bytes"], v  # int8 weights
        assert summary[v]["accuracy"] > ref["accuracy"] - 0.1, (v, summary[v]["accuracy"])
    record = read_json(project / "models" / "tflite" / "pt2e_int8_static" / "conversion.json")
    assert record["pt2e"]["calibration_samples"] == raw["quantization"]["calibration_samples"]
    assert record["inspection"]["weight_bytes_by_dtype"].get("int8", 0) > 0
    # the calibration study made its points with litert-torch's own producer
    study = read_json(project / "calibration" / "study.json")
    made = [p for p in study["points"] if p.get("status", "ok") == "ok"]
    assert made and {p["variant"] for p in made} == {"pt2e_int8_static"}
    report = (project / "reports" / "report.html").read_text()
    assert "PyTorch model converted by litert-torch" in report and "agrees" in report
    (parent,) = [r for r in runs(project) if "mlflow.parentRunId" not in r.data.tags
                 and r.data.tags.get("study") != "calibration"]
    assert parent.info.run_name == "torch-digits"
    (float_run,) = [r for r in runs(project) if r.data.tags.get("variant") == "float32"]
    assert float_run.data.metrics["conversion_agreement"] == 1.0
    shown = run([sys.executable, "-m", "pipeline.report.intake"], project)
    assert "cnn.pt2: PyTorch model converted by litert-torch" in shown
    assert "| pt2e_int8_static | " in shown and "| int8 | failed: " in shown


def test_an_nhwc_onnx_model_is_fed_as_it_is(tmp_path: Path, dataset: Any,
                                            digits_cnn: Any) -> None:
    """An ONNX model that takes NHWC images already (as tf2onnx writes them): found by its
    input shape, kept NHWC by onnx2tf, and scoring as the original."""
    import torch

    from pipeline.produce import model_store

    model, torch_accuracy = digits_cnn

    class Nhwc(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: Any) -> Any:
            return self.inner(x.permute(0, 3, 1, 2))

    path = tmp_path / "nhwc.onnx"
    torch.onnx.export(Nhwc().eval(), (torch.zeros(2, 8, 8, 1),), str(path), dynamo=False,
                      opset_version=13, input_names=["image"], output_names=["scores"],
                      dynamic_axes={"image": {0: "N"}, "scores": {0: "N"}})
    info = intake.run(onnx_cfg(path), dataset, "[0, 1]", tmp_path / "intake")
    assert info["layout"] == "nhwc" and "transposed" not in info["fed"]
    assert info["fidelity"]["agreement"] == 1.0
    model_tf, _, _ = model_store.load_user_model(tmp_path / "intake" / intake.SAVED_MODEL)
    assert model_store.accuracy(model_tf, dataset.x_test, dataset.y_test) == pytest.approx(
        torch_accuracy, abs=1e-9)
