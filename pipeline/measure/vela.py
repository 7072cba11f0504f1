"""Arm Vela (`ethos-u-vela`): compile an integer `.tflite` for an Ethos-U NPU and read what it
costs there: SRAM, flash (or DRAM), operators on the NPU and on the CPU, MACs, cycles and the
estimated inference time (no TensorFlow).

    python -m pipeline.measure.vela models/tflite/int8_full/int8_full.tflite ethos-u55-128 out/

Vela runs as a child process (`python -m ethosu.vela`), with the accelerator, system config
and memory mode pinned (`conf/footprint/`), so that it never falls back to its defaults.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.layout import VELA_MODEL

VELA_INI = "Arm/vela.ini"  # the configuration file shipped inside the ethos-u-vela wheel
_OPERATORS = re.compile(r"^(CPU|NPU) operators = (\d+) \(([\d.]+)%\)", re.MULTILINE)
TABLE = "vela.txt"  # Vela's printed report: per-operator table and network summary
COMPILED = VELA_MODEL  # the compiled model, for the device


# Vela's operator names -> TFLite's, for the ops that cost MACs.
TFLITE_OPS = {"Conv2D": "CONV_2D", "DepthwiseConv2D": "DEPTHWISE_CONV_2D",
              "FullyConnected": "FULLY_CONNECTED", "MaxPool": "MAX_POOL_2D",
              "AvgPool": "AVERAGE_POOL_2D", "Softmax": "SOFTMAX", "Mean": "MEAN",
              "TransposeConv2D": "TRANSPOSE_CONV", "BatchMatMul": "BATCH_MATMUL"}
# Activations Vela runs as a separate 1x1 pooling pass when it cannot fuse them (its MACs).
ACTIVATIONS = frozenset({"Relu", "Relu6", "ReluN1To1", "Relu0To1", "Clip", "Sigmoid", "Tanh",
                         "LeakyRelu", "HardSwish", "Prelu"})


class VelaError(Exception):
    """Vela refused or failed to compile the model."""


@dataclasses.dataclass(frozen=True)
class Target:
    """One Ethos-U configuration: accelerator (`ethos-u55-128`), system config and memory
    mode, as named in Vela's `Arm/vela.ini`."""

    accelerator: str
    system_config: str
    memory_mode: str


def _kib(value: str) -> int:
    return int(round(float(value) * 1024))


def compile_model(path: str | Path, target: Target, out_dir: str | Path,
                  timeout: float = 600.0) -> dict[str, Any]:
    """Compile `path` for `target` into `out_dir` (kept: `vela.txt`, the per-layer CSV, the
    summary CSV and `model_vela.tflite`).

    Returns:
        `sram_bytes`, `flash_bytes` (off-chip flash, on-chip flash and DRAM Vela placed data
        in), `macs`, `cycles` (total, `npu_cycles` the NPU's share), `inference_ms`,
        `npu_ops`, `cpu_ops`, `npu_ops_share` (Vela's operator counts after its rewrites),
        `cpu_op_types` (`{original op: count}` left on the CPU), `macs_by_op_type` (per
        TFLite op type, and `unfused_activations`: an activation Vela could not fuse runs
        as a 1x1 pooling pass, and counts MACs), `seconds`.

    Raises:
        VelaError: with Vela's last error line.
    """
    import time

    path, out = Path(path), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "ethosu.vela", str(path), "--config", VELA_INI,
            "--accelerator-config", target.accelerator, "--system-config",
            target.system_config, "--memory-mode", target.memory_mode, "--output-dir",
            str(out), "--verbose-performance"]
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    # Vela's notes on every tensor with a dynamic batch axis are noise; keep the rest.
    report = "\n".join(ln for ln in proc.stdout.splitlines()
                       if not ln.startswith("Tensor '") or "dynamic signature" not in ln)
    (out / TABLE).write_text(report + ("\n" + proc.stderr if proc.stderr else ""))
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + "\n" + report).splitlines()
                 if ln.strip() and not ln.startswith("Warning: No ")]
        if proc.returncode < 0:
            import signal

            raise VelaError(f"Vela crashed ({signal.Signals(-proc.returncode).name})"
                            + (f" after: {lines[-1]}" if lines else ""))
        raise VelaError(lines[-1] if lines else f"vela exited with {proc.returncode}")
    summaries = list(out.glob(f"{path.stem}_summary_*.csv"))
    if not summaries:
        raise VelaError("Vela wrote no summary CSV")
    with summaries[0].open(newline="") as f:
        s = next(csv.DictReader(f))
    counts = {kind: (int(n), float(share)) for kind, n, share in _OPERATORS.findall(report)}
    cpu_types: Counter[str] = Counter()
    macs_by_type: Counter[str] = Counter()
    per_layer = out / f"{path.stem}_per-layer.csv"
    if per_layer.is_file():
        with per_layer.open(newline="") as f:
            for r in csv.DictReader(f):
                if r["Target"] == "CPU":
                    cpu_types[r["Original Operator"]] += 1
                elif int(r["MAC Count"] or 0):
                    kind = ("unfused_activations" if r["NNG Operator"] in ACTIVATIONS
                            else TFLITE_OPS.get(r["Original Operator"], r["Original Operator"]))
                    macs_by_type[kind] += int(r["MAC Count"])
    compiled = out / f"{path.stem}_vela.tflite"
    if compiled.is_file():
        compiled.replace(out / COMPILED)
    flash = sum(_kib(s.get(f"{area}_memory_used", "0") or "0")
                for area in ("off_chip_flash", "on_chip_flash", "dram"))
    npu_ops, npu_share = counts.get("NPU", (0, 0.0))
    return {
        "sram_bytes": _kib(s["sram_memory_used"]),
        "flash_bytes": flash,
        "macs": int(float(s["nn_macs"])),
        "cycles": int(float(s["cycles_total"])),
        "npu_cycles": int(float(s["cycles_npu"])),
        "inference_ms": float(s["inference_time"]) * 1e3,
        "npu_ops": npu_ops,
        "cpu_ops": counts.get("CPU", (0, 0.0))[0],
        "npu_ops_share": npu_share / 100,
        "cpu_op_types": dict(sorted(cpu_types.items())),
        "macs_by_op_type": dict(sorted(macs_by_type.items())),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("accelerator", help="e.g. ethos-u55-128")
    parser.add_argument("out_dir")
    parser.add_argument("--system-config", default="Ethos_U55_High_End_Embedded")
    parser.add_argument("--memory-mode", default="Shared_Sram")
    args = parser.parse_args()
    print(json.dumps(compile_model(args.model, Target(args.accelerator, args.system_config,
                                                      args.memory_mode), args.out_dir),
                     indent=2))


if __name__ == "__main__":
    main()
