"""One variant as a package a device project drops in (`deploy/<variant>/`), from what the
lab measured (no TensorFlow):

- `model.tflite` (the variant's file, byte for byte; with an Ethos-U target, Vela's
  compiled `model_vela.tflite` beside it);
- `<c_name>_data.h/.cc`, `<c_name>_ops.h`, `<c_name>_settings.h`: the C sources of a TFLite
  Micro project (`pipeline.ship.csource`), when TFLite Micro runs the model;
- `io.json`: the same facts for Python, Android and iOS, and `predict.py` that uses them;
- `golden/`: test samples as the device sees them (quantized inputs), the outputs TFLite
  Micro and LiteRT's built-in kernels gave, and `check.py` for a device's dump;
- `README.md`: what each file is, the variant's measured figures, how to build it in.

    python -m pipeline.ship int8_full --out exports/int8_full   # or: make export VARIANT=...
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.io import atomic_dir, write_bytes, write_json, write_text
from pipeline.measure import graph, micro
from pipeline.measure.footprint import litert_outputs
from pipeline.measure.litert import load_interpreter, quantize_input
from pipeline.ship import csource

FILES = Path(__file__).with_name("files")  # predict.py and check.py, copied as they are
RECORD = "export.json"  # what was written, and why a part was not
GOLDEN = "golden"
EXPECTED = "expected.npy"  # in golden/: what the device must give (TFLM's, else LiteRT's)


@dataclasses.dataclass(frozen=True)
class Measured:
    """What the lab measured of the variant, for the package's facts and README.

    Attributes:
        variant: Its name.
        row: Its summary row (`pipeline.report.summary`): accuracy and interval, size,
            latency; None if not at hand.
        footprint: Its footprint (`pipeline.measure.footprint.measure`): TFLM's smallest
            arena and whether TFLM runs it, Vela's figures.
        vela_model: Vela's compiled model for the report's target NPU, if any.
        labels: What accuracy means here (`evaluate.labels`: `data`, or `model`: agreement
            with the reference).
    """

    variant: str
    row: Mapping[str, Any] | None = None
    footprint: Mapping[str, Any] | None = None
    vela_model: Path | None = None
    labels: str = "data"


@dataclasses.dataclass(frozen=True)
class Options:
    """`deploy` in the config: the C identifier prefix, the arena margin (a share of the
    smallest arena), how many golden samples, and the tolerance for a float model's outputs."""

    c_name: str
    arena_margin: float
    golden_samples: int
    float_tolerance: float


def _tensor(detail: Mapping[str, Any]) -> dict[str, Any]:
    scale, zero_point = detail["quantization"]
    shape = [int(d) for d in detail["shape"]]
    return {"name": detail["name"], "dtype": np.dtype(detail["dtype"]).name, "shape": shape,
            "size": int(np.prod(shape[1:])) if len(shape) > 1 else int(np.prod(shape)),
            "quantized": bool(scale), "scale": float(scale), "zero_point": int(zero_point)}


def io_facts(tflite: Path, data_meta: Mapping[str, Any], classes: Sequence[str],
             measured: Measured, options: Options) -> dict[str, Any]:
    """`io.json`: the input and output tensors (shape, type, scale, zero point), the input
    range the model expects, the class names, and the arena TFLite Micro needs."""
    interpreter = load_interpreter(tflite, num_threads=1, kernels="builtin")
    rng = data_meta.get("input_range") or {"multiply": 1.0, "add": 0.0, "describe": "[0, 1]"}
    micro_fp = (measured.footprint or {}).get("micro") or {}
    facts: dict[str, Any] = {
        "variant": measured.variant,
        "input": _tensor(interpreter.get_input_details()[0]),
        "output": _tensor(interpreter.get_output_details()[0]),
        "input_range": {"divide_by": float(data_meta.get("divide_by", 1.0)),
                        "multiply": rng["multiply"], "add": rng["add"],
                        "describe": rng["describe"]},
        "classes": list(classes),
        "scores": "agreement with the reference model" if measured.labels == "model"
        else "class scores (after dequantization)"}
    if micro_fp.get("status") == "ok" and micro_fp.get("smallest_arena_bytes"):
        smallest = int(micro_fp["smallest_arena_bytes"])
        facts["arena"] = {"bytes": csource.arena_bytes(smallest, options.arena_margin),
                          "smallest_bytes": smallest, "margin": options.arena_margin,
                          "alignment": csource.ALIGNMENT,
                          "measured_with": csource.tflm_ops()["source"]["wheel"]}
    return facts


def _c_golden(inputs: np.ndarray, io: Mapping[str, Any], name: str) -> str:
    ctype = csource.C_TYPES[io["input"]["dtype"]]
    rows = ",\n".join("  {" + ", ".join(str(v) for v in sample.reshape(-1)) + "}"
                      for sample in inputs)
    return (f"// Golden inputs: {len(inputs)} test samples as the device feeds them "
            f"(quantized), generated by the TFLite quantization lab.\n#pragma once\n"
            f"#include <cstdint>\nconstexpr int {name}_kGoldenSamples = {len(inputs)};\n"
            f"alignas(16) const {ctype} {name}_golden_inputs[{len(inputs)}]"
            f"[{io['input']['size']}] = {{\n{rows}\n}};\n")


def golden(tflite: Path, x: np.ndarray, y: np.ndarray, io: Mapping[str, Any], out: Path,
           options: Options, micro_runs: bool) -> dict[str, Any]:
    """`golden/`: the samples' quantized inputs, their labels, LiteRT's built-in kernels'
    raw outputs and, when TFLite Micro runs the model, TFLM's (what `check.py` compares a
    device's dump with). Returns `golden.json`'s facts."""
    interpreter = load_interpreter(tflite, num_threads=1, kernels="builtin")
    detail = interpreter.get_input_details()[0]
    inputs = np.stack([quantize_input(np.asarray(s)[None], detail)[0] for s in x])
    litert = litert_outputs(tflite, x, "builtin")
    exact = io["output"]["dtype"] != "float32"
    facts: dict[str, Any] = {
        "samples": len(x), "input_dtype": io["input"]["dtype"],
        "output_dtype": io["output"]["dtype"], "exact": exact,
        "tolerance": 0.0 if exact else options.float_tolerance,
        "reference": "TFLite Micro" if micro_runs else "LiteRT built-in kernels"}
    g = out / GOLDEN
    g.mkdir()
    np.save(g / "inputs.npy", inputs)
    np.save(g / "labels.npy", np.asarray(y))
    np.save(g / "expected_litert.npy", litert)
    if micro_runs:
        tflm = micro.run(tflite, x, smallest=False)["outputs"]
        np.save(g / "expected_tflm.npy", tflm)
        np.save(g / EXPECTED, tflm)  # the device runs TFLite Micro
        facts["tflm_litert_identical"] = bool(np.array_equal(tflm, litert))
        write_text(g / "inputs.h", _c_golden(inputs, io, options.c_name))
    else:  # the device is a LiteRT one: its golden outputs are LiteRT's
        np.save(g / EXPECTED, litert)
    write_json(g / "golden.json", facts)
    shutil.copyfile(FILES / "check.py", out / "check.py")
    return facts


def build(tflite: str | Path, out_dir: str | Path, x: np.ndarray, y: np.ndarray,
          data_meta: Mapping[str, Any], classes: Sequence[str], measured: Measured,
          options: Options) -> dict[str, Any]:
    """Write the variant's package into `out_dir` (replaced whole, atomically).

    Args:
        tflite: The variant's `.tflite`.
        x, y: The golden samples (the test split's first ones, in the model's input range)
            and their labels.
        data_meta: The prepared data's meta (`pipeline.data.meta`): input range, divide_by.
        classes: The class names.

    Returns:
        The package's record (`export.json`): the files and their sizes, and `micro`: the
        C sources' status, or why TFLite Micro cannot take the model.
    """
    tflite, out_dir = Path(tflite), Path(out_dir)
    csource.check_identifier(options.c_name)
    name = options.c_name
    flatbuffer = tflite.read_bytes()
    ops = [op.type for op in graph.read(tflite).ops]
    record: dict[str, Any] = {"variant": measured.variant, "status": "ok"}
    with atomic_dir(out_dir) as out:
        write_bytes(out / "model.tflite", flatbuffer)
        if measured.vela_model is not None and measured.vela_model.is_file():
            shutil.copyfile(measured.vela_model, out / "model_vela.tflite")
        io = io_facts(tflite, data_meta, classes, measured, options)
        micro_fp = (measured.footprint or {}).get("micro") or {}
        try:
            header, methods = csource.resolver(ops, name)
            if micro_fp.get("status") != "ok":
                raise csource.UnsupportedOp(micro_fp.get("error") or
                                            "TFLite Micro was not run on it (footprint.micro)")
        except csource.UnsupportedOp as exc:
            record["micro"] = {"status": "failed", "error": str(exc)}
        else:
            data_h, data_cc = csource.model_data(flatbuffer, name)
            write_text(out / f"{name}_data.h", data_h)
            write_text(out / f"{name}_data.cc", data_cc)
            write_text(out / f"{name}_ops.h", header)
            write_text(out / f"{name}_settings.h", csource.settings(io, name))
            record["micro"] = {"status": "ok", "ops": methods,
                               "arena_bytes": io["arena"]["bytes"]}
        write_json(out / "io.json", io)
        shutil.copyfile(FILES / "predict.py", out / "predict.py")
        record["golden"] = golden(tflite, x, y, io, out, options,
                                  record["micro"]["status"] == "ok")
        write_text(out / "README.md", readme(io, record, measured, options))
        record["files"] = {str(p.relative_to(out)): p.stat().st_size
                           for p in sorted(out.rglob("*")) if p.is_file()}
        write_json(out / RECORD, record)
    return record


def _figure(row: Mapping[str, Any] | None, key: str, text: str) -> str | None:
    return text.format(**row) if row and key in row else None


def _tensor_line(t: Mapping[str, Any]) -> str:
    quantized = (f" (scale {t['scale']:.6g}, zero point {t['zero_point']})"
                 if t["quantized"] else "")
    return f"{t['dtype']} {t['shape']}{quantized}"


def _build_in(name: str, io: Mapping[str, Any], golden_facts: Mapping[str, Any]) -> str:
    if io["input"]["quantized"]:
        quantize = (f"// q = clamp(round(x / {name}_kInputScale) + {name}_kInputZeroPoint) "
                    "to the input type")
    else:
        quantize = "// the input tensor is float: x as it is"
    check = ("bit for bit against TFLite Micro" if golden_facts["exact"]
             else f"within {golden_facts['tolerance']:g} of TFLite Micro")
    return "\n".join([
        "## Build it into a TFLite Micro project", "", "```cpp",
        f'#include "{name}_data.h"', f'#include "{name}_ops.h"',
        f'#include "{name}_settings.h"',
        '#include "tensorflow/lite/micro/micro_interpreter.h"', "",
        f"alignas(16) static uint8_t tensor_arena[{name}_kTensorArenaSize];",
        f"static TFLM_NAMESPACE::MicroMutableOpResolver<{name}_kOpCount> resolver;", "",
        f"{name}_register_ops(resolver);  // once",
        f"const tflite::Model* model = tflite::GetModel({name}_data);",
        "static TFLM_NAMESPACE::MicroInterpreter interpreter(model, resolver, tensor_arena,",
        f"                                                    {name}_kTensorArenaSize);",
        "interpreter.AllocateTensors();",
        f"// per sample: x = pixel / {name}_kInputDivideBy * {name}_kInputMultiply[c]"
        f" + {name}_kInputAdd[c]",
        quantize, "// write it into interpreter.input(0), Invoke(), read interpreter.output(0)",
        "```", "",
        "Check the device: dump the output tensor for each sample of `golden/inputs.h` (one "
        "line per sample,", f"values spaced) and run `python check.py dump.txt`: {check}.", ""])


def readme(io: Mapping[str, Any], record: Mapping[str, Any], measured: Measured,
           options: Options) -> str:
    """The package's README: what each file is, what the lab measured, how to build it in."""
    name, row = options.c_name, measured.row
    agreement = " (agreement with the reference model: no labels)" \
        if measured.labels == "model" else ""
    lines = [f"# `{measured.variant}`, packaged by the TFLite quantization lab", "",
             "## Measured"]
    lines += [line for line in (
        _figure(row, "accuracy", "- accuracy {accuracy:.4f} [{accuracy_ci_low:.4f}, "
                "{accuracy_ci_high:.4f}] (95% Wilson interval) on the test split" + agreement),
        _figure(row, "accuracy_drop", "- drop against the reference {accuracy_drop:+.4f} "
                "[{accuracy_drop_ci_low:+.4f}, {accuracy_drop_ci_high:+.4f}]"),
        _figure(row, "size_bytes", "- size {size_bytes:,} B"),
        _figure(row, "latency_ms_p50", "- latency p50 {latency_ms_p50:.3f} ms (one thread, "
                "XNNPACK, on the lab's machine)")) if line] or ["- (no summary at hand)"]
    if "arena" in io:
        a = io["arena"]
        lines.append(f"- TFLite Micro arena: {a['smallest_bytes']:,} B at the least "
                     f"({a['measured_with']}); the settings ask {a['bytes']:,} B "
                     f"(+{100 * a['margin']:g}%)")
    micro_part, golden_facts = record["micro"], record["golden"]
    lines += ["", "## Files", "- `model.tflite`: the variant, byte for byte the lab's"]
    if measured.vela_model is not None:
        lines.append("- `model_vela.tflite`: Vela's compiled model for the NPU")
    if micro_part["status"] == "ok":
        lines += [f"- `{name}_data.h`, `{name}_data.cc`: the model as a 16-byte aligned "
                  f"array `{name}_data` of `{name}_data_len` bytes",
                  f"- `{name}_ops.h`: `{name}_register_ops(resolver)` adds exactly the "
                  f"model's {len(micro_part['ops'])} ops: {', '.join(micro_part['ops'])}",
                  f"- `{name}_settings.h`: arena size, input and output shapes, types, "
                  "scales, zero points, input range, class names",
                  "- `golden/inputs.h`: the golden samples as C arrays"]
    else:
        lines.append(f"- no C sources: {micro_part['error']}")
    rng = io["input_range"]
    lines += [f"- `io.json`: input {_tensor_line(io['input'])}, output "
              f"{_tensor_line(io['output'])}; input range {rng['describe']}; "
              f"{len(io['classes'])} classes",
              "- `predict.py`: `python predict.py image.png` or `python predict.py "
              "samples.npz` (numpy, ai-edge-litert)",
              f"- `golden/`: {golden_facts['samples']} test samples as the device sees them "
              f"and the outputs {golden_facts['reference']} gave them; `check.py` compares "
              "a device's dump with those", ""]
    if micro_part["status"] == "ok":
        lines.append(_build_in(name, io, golden_facts))
    else:
        lines += ["## On a device", "", "TFLite Micro cannot run this variant (above): use "
                  "it with LiteRT (Android, iOS, Linux), as `predict.py` does.", ""]
    return "\n".join(lines)
