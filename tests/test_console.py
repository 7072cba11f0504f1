"""A clean console (`pipeline.quiet`): the third-party lines that are not news are gone from
a stage's output, the lab's own lines and anything else stay."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from pipeline import params as params_mod
from pipeline import data, quiet
from pipeline.layout import Layout

# What the stages printed before (written out here, not taken from pipeline.quiet).
OLD_NOISE = ("failed call to cuInit", "absl::InitializeLog()", "Could not find cuda drivers",
             "fully_quantize:", "experimental_preserve_all_tensors", "Assets written to:",
             "contains input name(s)", "No training configuration found")


def test_native_output_loses_only_the_noise_lines(capfd: pytest.CaptureFixture[str]) -> None:
    """Written to fd 2 as C++ code writes (not through Python), in order, a progress bar's
    `\\r` pieces included."""
    lines = [b"kept before\n",
             b"WARNING: All log messages before absl::InitializeLog() is called are written "
             b"to STDERR\n",
             b"E0000 00:00:1796169020.497643   24986 cuda_platform.cc:52] failed call to "
             b"cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
             b"progress 1/2\r", b"progress 2/2\r",
             b"fully_quantize: 0, inference_type: 6, input_inference_type: INT8, "
             b"output_inference_type: INT8\n",
             b"E0000 00:00:1796169020.5 other.cc:1] a real error\n",
             b"no newline at the end"]
    with quiet.native():
        for line in lines:
            os.write(2, line)
    after = "written after the block\n"
    sys.stderr.write(after)
    err = capfd.readouterr().err
    assert err == ("kept before\nprogress 1/2\rprogress 2/2\r"
                   "E0000 00:00:1796169020.5 other.cc:1] a real error\n"
                   "no newline at the end" + after)


@pytest.mark.slow
def test_tensorflow_stages_print_no_third_party_noise(tmp_path: Path, tiny_raw: dict[str, Any],
                                                      small_dataset: data.Dataset) -> None:
    """The real train, qat and quantize stages in fresh processes (`LAB_WORKER=0`:
    TensorFlow is imported by the stage itself; the models exported, the float model loaded
    back), a converter variant with its per-layer debugger and a LiteRT Quantizer variant with
    its calibration."""
    lay = Layout(tmp_path)
    data.save(small_dataset, lay.dataset)
    raw = copy.deepcopy(tiny_raw)
    raw["train"]["epochs"] = raw["qat"]["epochs"] = 1
    names = ("float32", "int8_full", "aeq_int8_static")
    raw["quantization"]["variants"] = {n: raw["quantization"]["variants"][n] for n in names}
    raw["calibration"]["variants"] = ["int8_full"]  # one of those
    (tmp_path / "params.yaml").write_text(params_mod.render_params(raw))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LAB_WORKER": "0"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it
    printed = {}
    for stage, *args in (("train",), ("qat",), ("quantize", "int8_full"),
                         ("quantize", "aeq_int8_static")):
        proc = subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py"), *args,
                               "--params", str(tmp_path / "params.yaml"),
                               "--root", str(tmp_path)],
                              cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        printed[" ".join([stage, *args])] = proc.stdout + proc.stderr
    for name, out in printed.items():
        noise = [line for line in out.splitlines() if any(n in line for n in OLD_NOISE)]
        assert noise == [], (name, noise)
    # The lab's own lines stay (and records of the same loggers that are not noise).
    assert "QAT Keras model: test accuracy" in printed["qat"]
    assert "int8_full: ok in" in printed["quantize int8_full"]
    assert "aeq_int8_static: ok in" in printed["quantize aeq_int8_static"]
