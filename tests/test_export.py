"""Device packages (`pipeline.ship`), checked against the real tools, not by reading our own
output: the C array compiled with the system C++ compiler and written back out, the resolver
compiled against TFLite Micro's method names, `predict.py` against the evaluation's
predictions, the golden outputs against fresh runs of TFLite Micro and LiteRT, the input
quantization against what the evaluation fed. Tiny trained models (tests/conftest.py)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from pipeline import data, sources
from pipeline.config import Config
from pipeline.measure import graph, litert, micro
from pipeline.measure.footprint import litert_outputs
from pipeline.ship import csource, package

GXX = shutil.which("g++")
OPTIONS = package.Options(c_name="model", arena_margin=0.1, golden_samples=6,
                          float_tolerance=1e-5)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_cfg: Config) -> Path:
    """The prepared digits as the prepare stage stores them (raw pixels and meta): the same
    data and seed the tiny models were trained on."""
    path = tmp_path_factory.mktemp("store") / "prepared"
    sources.prepare(tiny_cfg.data, tiny_cfg.seed, path)
    return path


def build(name: str, models: dict[str, Path], store: Path, out: Path,
          measure_micro: bool = True) -> dict[str, Any]:
    ds = data.load(store)
    x = np.asarray(ds.x_test[:OPTIONS.golden_samples], np.float32)
    fp: dict[str, Any] = {"micro": {"status": "failed", "error": "not run"}}
    if measure_micro:
        try:
            fp = {"micro": {"status": "ok", **micro.run(models[name])}}
        except micro.MicroError as exc:
            fp = {"micro": {"status": "failed", "error": str(exc)}}
    measured = package.Measured(name, {"accuracy": 0.9, "accuracy_ci_low": 0.8,
                                       "accuracy_ci_high": 0.95, "size_bytes": 1000},
                                fp, None, "data")
    return package.build(models[name], out / name, x, ds.y_test[:len(x)], data.meta(store),
                         [str(c) for c in range(ds.num_classes)], measured, OPTIONS)


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path],
             store: Path) -> Path:
    out = tmp_path_factory.mktemp("deploy")
    for name in ("int8_full", "uint8_full", "float32", "dynamic_range"):
        build(name, models, store, out)
    return out


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem + "_" + path.parent.name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _compile_and_run(tmp: Path, sources_: list[Path], main: str, *args: str,
                     include: list[Path] = ()) -> str:
    (tmp / "main.cc").write_text(main)
    exe = tmp / "prog"
    subprocess.run([GXX, "-std=c++17", "-Wall", "-Werror", *(f"-I{p}" for p in include),
                    str(tmp / "main.cc"), *map(str, sources_), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    return subprocess.run([str(exe), *args], check=True, capture_output=True,
                          text=True).stdout


@pytest.mark.skipif(GXX is None, reason="g++ is on every machine of this project (NOTES.md)")
def test_the_c_array_is_the_model_byte_for_byte_and_16_byte_aligned(packages: Path,
                                                                     tmp_path: Path) -> None:
    pkg = packages / "int8_full"
    back = tmp_path / "back.tflite"
    printed = _compile_and_run(tmp_path, [pkg / "model_data.cc"], """
#include <cstdint>
#include <cstdio>
#include "model_data.h"
int main(int, char** argv) {
  FILE* f = std::fopen(argv[1], "wb");
  std::fwrite(model_data, 1, model_data_len, f);
  std::fclose(f);
  std::printf("%u\\n", static_cast<unsigned>(reinterpret_cast<uintptr_t>(model_data) % 16));
}
""", str(back), include=[pkg])
    assert back.read_bytes() == (pkg / "model.tflite").read_bytes()
    assert printed.strip() == "0"


@pytest.mark.skipif(GXX is None, reason="g++ is on every machine of this project (NOTES.md)")
def test_the_resolver_adds_exactly_the_models_ops_by_tflm_names(packages: Path,
                                                                tmp_path: Path,
                                                                models: dict[str, Path]) -> None:
    """Its ops are the flatbuffer's operator codes; each method exists in TFLite Micro's
    `micro_mutable_op_resolver.h` at the pinned version (`tflm_ops.json`, taken from that
    header); the header and the settings compile against a resolver with exactly those
    methods and count one call per op."""
    pkg = packages / "int8_full"
    ops = list(dict.fromkeys(op.type for op in graph.read(models["int8_full"]).ops))
    known = csource.tflm_ops()["builtins"]
    header = (pkg / "model_ops.h").read_text()
    called = [line.split("resolver.")[1].split("(")[0] for line in header.splitlines()
              if "resolver." in line and "kTfLiteOk" in line and "return" in line]
    assert called == [known[op] for op in ops] and f"model_kOpCount = {len(ops)};" in header
    assert set(called) <= set(known.values())
    stub = tmp_path / "tensorflow" / "lite" / "micro"
    stub.mkdir(parents=True)
    methods = "\n".join(f"  TfLiteStatus {m}() {{ ++calls; return kTfLiteOk; }}"
                        for m in sorted(set(known.values())))
    (stub / "micro_mutable_op_resolver.h").write_text(f"""#pragma once
typedef int TfLiteStatus;
enum {{ kTfLiteOk = 0, kTfLiteError = 1 }};
namespace tflite {{ namespace micro {{
template <unsigned int tOpCount> class MicroMutableOpResolver {{
 public:
  int calls = 0;
{methods}
}};
}} }}
""")
    printed = _compile_and_run(tmp_path, [], """
#include <cstdio>
#include "model_ops.h"
#include "model_settings.h"
static_assert(model_kTensorArenaSize % 16 == 0, "aligned arena");
int main() {
  static TFLM_NAMESPACE::MicroMutableOpResolver<model_kOpCount> resolver;
  int status = model_register_ops(resolver);
  std::printf("%d %d %d %d\\n", status, resolver.calls, model_kTensorArenaSize,
              model_kInputZeroPoint);
}
""", include=[pkg, tmp_path])
    status, calls, arena, zero_point = map(int, printed.split())
    io = json.loads((pkg / "io.json").read_text())
    assert (status, calls) == (0, len(ops))
    assert arena == io["arena"]["bytes"] >= io["arena"]["smallest_bytes"] > 0
    assert zero_point == io["input"]["zero_point"]


def test_an_op_tflm_lacks_stops_the_c_sources_with_its_name(packages: Path) -> None:
    with pytest.raises(csource.UnsupportedOp, match="no resolver method for GELU"):
        csource.resolver(["CONV_2D", "GELU"], "model")
    # dynamic_range computes in float with int8 weights: TFLM cannot run it; its package
    # still has the model, io.json, predict.py and LiteRT's golden outputs, and says why
    pkg = packages / "dynamic_range"
    record = json.loads((pkg / package.RECORD).read_text())
    assert record["micro"]["status"] == "failed" and record["micro"]["error"]
    assert not list(pkg.glob("model_*.h")) and (pkg / "predict.py").is_file()
    assert record["micro"]["error"] in (pkg / "README.md").read_text()


def test_predict_py_agrees_with_the_evaluation(packages: Path, store: Path,
                                               tmp_path: Path) -> None:
    """The package's own example, run as a user runs it on the test split (raw samples in an
    .npz), gives the evaluate stage's predictions."""
    ds = data.load(store)
    raw = np.load(store / "x_test.npy")
    np.savez(tmp_path / "test.npz", x=raw)
    for name in ("int8_full", "float32"):
        pkg = packages / name
        out = tmp_path / f"{name}.npy"
        proc = subprocess.run([sys.executable, str(pkg / "predict.py"),
                               str(tmp_path / "test.npz"), "--out", str(out)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        evaluated = litert.Runner(pkg / "model.tflite").predict(ds.x_test).argmax(axis=1)
        assert np.array_equal(np.load(out), evaluated), name
        assert proc.stdout.startswith("0: ")


def test_golden_outputs_are_fresh_runs_of_both_interpreters(packages: Path,
                                                            store: Path) -> None:
    ds = data.load(store)
    x = np.asarray(ds.x_test[:OPTIONS.golden_samples], np.float32)
    for name in ("int8_full", "uint8_full"):
        golden = packages / name / "golden"
        model = packages / name / "model.tflite"
        assert np.array_equal(np.load(golden / "expected_tflm.npy"),
                              micro.run(model, x, smallest=False)["outputs"])
        assert np.array_equal(np.load(golden / "expected_litert.npy"),
                              litert_outputs(model, x, "builtin"))
        check = [sys.executable, str(packages / name / "check.py")]
        dump = golden.parent / "dump.txt"
        expected = np.load(golden / "expected.npy")  # TFLM's: it runs the model
        dump.write_text("\n".join(" ".join(map(str, row)) for row in expected))
        assert subprocess.run([*check, str(dump)], capture_output=True).returncode == 0
        expected[2, 0] += 1  # one value one LSB off on the device: named
        dump.write_text("\n".join(" ".join(map(str, row)) for row in expected))
        proc = subprocess.run([*check, str(dump)], capture_output=True, text=True)
        assert proc.returncode == 1 and proc.stdout.startswith("sample 2: 1 of ")


def test_the_packages_input_quantization_is_what_the_evaluation_fed(packages: Path,
                                                                    store: Path) -> None:
    """For int8 and uint8 inputs: io.json's scale and zero point, applied as predict.py does
    to the float test data, give exactly the integers the evaluation fed the model; the
    golden inputs are those integers."""
    ds = data.load(store)
    x = np.asarray(ds.x_test, np.float32)
    for name, dtype in (("int8_full", np.int8), ("uint8_full", np.uint8)):
        pkg = packages / name
        predict = _module(pkg / "predict.py")
        io = predict.load_io(pkg)
        detail = litert.load_interpreter(pkg / "model.tflite").get_input_details()[0]
        fed = litert.quantize_input(x, detail)
        ours = predict.quantize(predict.to_model_range(np.load(store / "x_test.npy")
                                                       / io["input_range"]["divide_by"], io),
                                io["input"])
        assert ours.dtype == dtype and np.array_equal(ours, fed), name
        assert np.array_equal(np.load(pkg / "golden" / "inputs.npy"),
                              fed[:OPTIONS.golden_samples])


def test_the_package_holds_every_file_and_the_model_unchanged(packages: Path,
                                                              models: dict[str, Path]) -> None:
    pkg = packages / "int8_full"
    assert (pkg / "model.tflite").read_bytes() == models["int8_full"].read_bytes()
    for f in ("model_data.h", "model_data.cc", "model_ops.h", "model_settings.h", "io.json",
              "predict.py", "check.py", "README.md", "golden/inputs.h", "golden/golden.json"):
        assert (pkg / f).is_file(), f
    readme = (pkg / "README.md").read_text()
    assert "accuracy 0.9000 [0.8000, 0.9500]" in readme and "model_register_ops" in readme
    with pytest.raises(ValueError, match="deploy.c_name must be a C identifier"):
        csource.model_data(b"\x00", "9lives")
