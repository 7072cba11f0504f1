"""The manual's table of refused input (`docs/robustness.md`), row by row: each case runs the real stage script in
a subprocess, as `dvc repro` would, and must end with a non-zero exit, exactly one error line
naming the problem (no traceback), no output file (not even a temporary one) and no MLflow
run left RUNNING. That table and this one must list the same cases.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from pipeline import config as config_mod
from pipeline import params as params_mod
from pipeline import sources
from pipeline.layout import Layout

Setup = Callable[[Path, dict[str, Any]], None]  # (workspace, raw config to edit in place)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    stage: str  # stages/<stage>.py
    setup: Setup
    message: str  # regex the error line must match
    variant: str | None = None  # quantize@variant
    env: dict[str, str] = dataclasses.field(default_factory=dict)


def images(root: Path, classes: tuple[str, ...] = ("a", "b"), per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(
                root / name / f"{i}.png")
    return root


def conf_section(choice: str) -> dict[str, Any]:
    """A group's section as its conf/ file sets it (`data=npz`: conf/data/npz.yaml)."""
    return params_mod.compose([choice])[choice.partition("=")[0]]


def image_folder(path: Path | None) -> Setup:
    def setup(ws: Path, raw: dict[str, Any]) -> None:
        raw["data"] = {**conf_section("data=image_folder"),
                       "path": None if path is None else str(ws / path),
                       "image_size": [8, 8], "channels": 1, "test_fraction": 0.25,
                       "val_fraction": 0.25}
    return setup


def folder_then(edit: Callable[[Path], None]) -> Setup:
    def setup(ws: Path, raw: dict[str, Any]) -> None:
        edit(images(ws / "imgs"))
        image_folder(Path("imgs"))(ws, raw)
    return setup


def npz(**arrays: np.ndarray) -> Setup:
    def setup(ws: Path, raw: dict[str, Any]) -> None:
        np.savez(ws / "mine.npz", **arrays)
        raw["data"] = {**conf_section("data=npz"), "path": str(ws / "mine.npz"),
                       "val_fraction": 0.2}
    return setup


X = np.zeros((6, 8, 8, 1), np.float32)
Y = np.array([0, 1, 2, 0, 1, 2])


def user_model(make: Callable[[Path], Path] | None, name: str = "mine.keras") -> Setup:
    def setup(ws: Path, raw: dict[str, Any]) -> None:
        prepared()(ws, raw)
        path = make(ws / name) if make else ws / name
        raw["model"] = {**conf_section("model=file"), "path": str(path), "safe_mode": True}
    return setup


def text_file(path: Path) -> Path:
    path.write_text("not a model\n")
    return path


def mnist_shaped_model(path: Path) -> Path:
    from pipeline.tfcompat import import_tf

    _, keras = import_tf()
    inputs = keras.Input(shape=(28, 28, 1))
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs))
    keras.Model(inputs, outputs).save(path)
    return path


def converted(arch: str, make: Callable[[Path], Path], name: str) -> Setup:
    """`model=onnx` / `model=torch` with the file `make` writes, on prepared data."""
    def setup(ws: Path, raw: dict[str, Any]) -> None:
        prepared()(ws, raw)
        raw["model"] = {**params_mod.compose([f"model={arch}", "model.path=x"])["model"],
                        "path": str(make(ws / name))}
    return setup


def onnx_relu(opset: int, op: str = "Relu", domain: str = "") -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        import onnx
        from onnx import TensorProto, helper

        io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1, 8, 8])
              for n in ("x", "y")]
        graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], name="n0",
                                                    domain=domain)], "g", io[:1], io[1:])
        imports = [helper.make_opsetid("", opset)] + (
            [helper.make_opsetid(domain, 1)] if domain else [])
        onnx.save(helper.make_model(graph, opset_imports=imports), path)
        return path
    return make


def junk(path: Path) -> Path:
    path.write_bytes(b"\x00" * 64)
    return path


def prepared(edit: Callable[[dict[str, Any]], None] = lambda raw: None) -> Setup:
    def setup(ws: Path, raw: dict[str, Any]) -> None:
        sources.prepare(config_mod.parse_config(raw).data, raw["seed"], Layout(ws).dataset)
        edit(raw)
    return setup


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def emptied(root: Path) -> None:
    shutil.rmtree(root)
    root.mkdir()


def unreadable(root: Path) -> None:
    (root / "a" / "0.png").write_bytes(b"\x89PNG but then nothing")


def calibration(n: int) -> Callable[[dict[str, Any]], None]:
    return lambda raw: raw["quantization"].__setitem__("calibration_samples", n)


CASES = [
    Case("data path missing", "prepare", image_folder(Path("nowhere")),
         r"data.path: image folder .*nowhere does not exist"),
    Case("data path not set", "prepare", image_folder(None),
         r"data.path is required for data.name=image_folder"),
    Case("data folder empty", "prepare", folder_then(emptied),
         r"data.path: .*imgs has no class folders"),
    Case("class folder without images", "prepare",
         folder_then(lambda root: (root / "c").mkdir()),
         r"data.path: class folder .*imgs/c has no PNG or JPEG images"),
    Case("unreadable image", "prepare", folder_then(unreadable),
         r"data.path: cannot read image .*0\.png"),
    Case("npz missing keys", "prepare", npz(x_train=X, y_train=Y),
         r"data.path: .*mine\.npz lacks x_test, y_test"),
    Case("npz mismatched lengths", "prepare", npz(x_train=X, y_train=Y[:5], x_test=X, y_test=Y),
         r"x_train has 6 samples but y_train has 5 labels"),
    Case("labels out of range", "prepare",
         npz(x_train=X, y_train=Y, x_test=X, y_test=Y + 5),
         r"y_test has label 7, which y_train never uses \(its labels are 0\.\.2\)"),
    Case("negative labels", "prepare", npz(x_train=X, y_train=Y - 1, x_test=X, y_test=Y),
         r"y_train has negative label -1"),
    Case("model file missing", "train", user_model(None),
         r"model.path: .*mine\.keras does not exist"),
    Case("model file not a model", "train", user_model(text_file),
         r"model.path: .*mine\.keras is not a model file \(a \.keras file is a zip archive"),
    Case("model input does not fit the data", "train", user_model(mnist_shaped_model),
         r"the model takes inputs of shape \(28, 28, 1\), but the data's samples are "
         r"\(8, 8, 1\)"),
    Case("an ONNX or PyTorch file given to model=file", "train",
         user_model(text_file, name="mine.onnx"),
         r"model.path: .*mine\.onnx is an ONNX model: use model=onnx model.path="),
    Case("an ONNX file that is not ONNX", "intake", converted("onnx", text_file, "mine.onnx"),
         r"model.path: .*mine\.onnx is not an ONNX file \("),
    Case("an ONNX opset newer than the converter knows", "intake",
         converted("onnx", onnx_relu(99), "new.onnx"),
         r"uses opset 99; the pinned onnx [\d.]+ and onnx2tf [\d.]+ know opsets up to \d+"),
    Case("an ONNX op the converter cannot take", "intake",
         converted("onnx", onnx_relu(13, "Fancy", "com.acme"), "custom.onnx"),
         r"has op\(s\) onnx2tf [\d.]+ cannot convert: Fancy \(node 'n0'\)"),
    Case("a PyTorch file that is not a torch export", "intake",
         converted("torch", junk, "mine.pt2"),
         r"model.path: .*mine\.pt2 is not a torch.export program \("),
    Case("unknown variant", "quantize", prepared(), r"unknown variant 'int9'; valid: float32,",
         variant="int9"),
    Case("calibration size zero", "quantize", prepared(calibration(0)),
         r"quantization.calibration_samples must be > 0, got 0", variant="int8"),
    Case("calibration size above the training split", "quantize",
         prepared(calibration(100_000)),
         r"calibration_samples must be between 1 and the training split's size \(\d+\), "
         r"got 100000", variant="int8"),
    Case("tracking server unreachable", "track", lambda ws, raw: None,
         r"tracking server http://127\.0\.0\.1:\d+ is unreachable", env={
             "MLFLOW_TRACKING_URI": "http://127.0.0.1:{port}"}),
]


def command(case: Case, ws: Path) -> tuple[list[str], list[Path]]:
    """The stage's command line, as in dvc.yaml but under `ws`, and its outputs."""
    lay = Layout(ws)
    script = [sys.executable, str(ROOT / "stages" / f"{case.stage}.py"),
              "--params", str(ws / "params.yaml"), "--root", str(ws)]
    outputs = {"prepare": [lay.dataset], "intake": [lay.intake],
               "train": [lay.keras("float"), lay.history("float"), lay.keras_metrics("float")],
               "quantize": [lay.variant(str(case.variant))],
               "track": [lay.mlflow_run]}[case.stage]
    return script + ([case.variant] if case.variant else []), outputs


def running_runs(ws: Path) -> list[str]:
    """Runs left RUNNING in the workspace's MLflow store (none if there is no store)."""
    db = ws / "mlflow.db"
    if not db.exists():
        return []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    return [r.info.run_id for e in client.search_experiments()
            for r in client.search_runs([e.experiment_id]) if r.info.status == "RUNNING"]


@pytest.mark.parametrize("case", CASES, ids=[c.name.replace(" ", "_") for c in CASES])
def test_bad_input_is_refused_with_one_clear_line(case: Case, tmp_path: Path,
                                                   tiny_raw: dict[str, Any]) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    raw = copy.deepcopy(tiny_raw)
    case.setup(ws, raw)
    (ws / "params.yaml").write_text(params_mod.render_params(raw))
    cmd, outputs = command(case, ws)
    before = {p for p in ws.rglob("*")}
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           **{k: v.format(port=free_port()) for k, v in case.env.items()}}
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ws / 'mlflow.db'}")

    proc = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=300)

    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert re.search(case.message, errors[0]), errors[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    for out in outputs:
        assert not out.exists(), f"{out} was written"
    assert {p for p in ws.rglob("*")} == before, "the stage left files behind"
    assert running_runs(ws) == []


def test_the_manual_lists_every_case() -> None:
    page = (ROOT / "docs" / "robustness.md").read_text(encoding="utf-8")
    section = page.split("## Refused input", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([a-z][^|]*?) \|", section, flags=re.MULTILINE)
    assert rows[0] == "case"  # the header
    assert rows[1:] == [c.name for c in CASES]
