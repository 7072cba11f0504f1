"""Models from other frameworks (`model=onnx`, `model=torch`): converted once into the float
model every variant starts from, and checked against their own runtime before anything is
quantized.

- ONNX: `onnx2tf` turns the file into a SavedModel (NCHW image inputs become NHWC, so the
  lab's images are fed as they are); the SavedModel is then the float model of a user's file
  (`model=file`): every converter and LiteRT Quantizer variant runs on it; QAT and the
  Keras-side methods need a tf_keras model and are declined with the reason.
- PyTorch: `litert-torch` turns the module (a `torch.export` program `.pt2`, or
  `module:function` returning it) into the float `.tflite`; an NCHW module gets a transpose
  in front (`model.layout`), so it too takes the lab's NHWC images. The exported program of
  that NHWC module is kept (`program.pt2`) for litert-torch's own PT2E variants
  (`pipeline.produce.by_torch`). Needs the torch extra (`make venv EXTRAS=torch`).
- Fidelity: the converted model against the original runtime (onnxruntime, torch) on the
  whole test split: the largest absolute output difference and the share of samples whose
  top-1 is the same. Beyond `model.max_abs_diff` or below `model.min_agreement` the intake
  stops with the figures, since every variant would inherit the difference.

Errors are one line: a file that is not ONNX or not a torch export, an opset newer than the
pinned `onnx` knows, an op the converter cannot take (named), a missing extra.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import importlib.metadata
import io
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import ONNX, TORCH, ConvertedModelConfig
from pipeline.data import Dataset
from pipeline.io import atomic_dir, read_json, write_json

log = logging.getLogger(__name__)

INFO = "intake.json"  # what was converted, by what, how it was fed, its fidelity
SAVED_MODEL = "saved_model"  # ONNX: the converted model
FLOAT_TFLITE = "model.tflite"  # PyTorch: the converted float model
PROGRAM = "program.pt2"  # PyTorch: the NHWC module's torch.export program (PT2E variants)
BATCH = 256  # test samples per call of either runtime
TORCH_EXTRA = "install the torch extra: make venv EXTRAS=torch"


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def read_info(intake_dir: str | Path) -> dict[str, Any]:
    """The intake's `intake.json` (`{"format": "keras"}` for a model that needed none).

    Raises:
        FileNotFoundError: if the intake stage has not run.
    """
    path = Path(intake_dir) / INFO
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the intake stage first "
                                "(dvc repro intake)")
    return read_json(path)


def fidelity(original: np.ndarray, converted: np.ndarray) -> dict[str, Any]:
    """How closely the converted model's outputs follow the original's on the same samples:
    `max_abs_diff` (over every output value), `agreement` (share of samples with the same
    top-1) and `samples`."""
    original = np.asarray(original, np.float64).reshape(len(original), -1)
    converted = np.asarray(converted, np.float64).reshape(len(converted), -1)
    if original.shape != converted.shape:
        raise ValueError(f"the converted model's outputs are {converted.shape[1:]}, the "
                         f"original's {original.shape[1:]}")
    return {"max_abs_diff": float(np.max(np.abs(original - converted))) if original.size
            else 0.0,
            "agreement": float(np.mean(original.argmax(1) == converted.argmax(1))),
            "samples": int(len(original))}


def check_fidelity(fid: dict[str, Any], cfg: ConvertedModelConfig, runtime: str) -> None:
    """Stop a conversion that changes the model beyond `conf/` tolerance.

    Raises:
        ValueError: with both figures and the tolerance.
    """
    if fid["max_abs_diff"] > cfg.max_abs_diff or fid["agreement"] < cfg.min_agreement:
        raise ValueError(
            f"the converted model differs from {runtime} on the {fid['samples']:,} test "
            f"samples: max |output difference| {fid['max_abs_diff']:.3g} (model.max_abs_diff "
            f"{cfg.max_abs_diff:g}), top-1 agreement {fid['agreement']:.4%} "
            f"(model.min_agreement {cfg.min_agreement:.4%}); every variant would inherit it, "
            "so nothing is quantized")


def _batched(x: Any, fn: Any, batch: int = BATCH) -> np.ndarray:
    return np.concatenate([np.asarray(fn(np.asarray(x[s:s + batch], np.float32)))
                           for s in range(0, len(x), batch)])


def fed(ds: Dataset, layout: str, range_text: str) -> str:
    """What the model was fed, for the report."""
    shape = "x".join(str(d) for d in ds.input_shape)
    turned = ("; the model's NCHW input is transposed inside the converted model"
              if layout == "nchw" else "")
    return f"NHWC {shape} images, {range_text}{turned}"


# --- ONNX ----------------------------------------------------------------------------------

def read_onnx(path: str | Path) -> Any:
    """Load and check an ONNX file.

    Raises:
        FileNotFoundError: if it does not exist.
        ValueError: if it is not ONNX, its opset is newer than the pinned `onnx` knows, it
            fails ONNX's checker, or it has an op onnx2tf cannot convert (named).
    """
    import onnx

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model.path: {path} does not exist (an .onnx file)")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ValueError(f"model.path: {path} is not an ONNX file ({_one_line(exc)})") from None
    if not model.graph.node or model.ir_version <= 0:
        raise ValueError(f"model.path: {path} is not an ONNX file (no graph in it)")
    known = onnx.defs.onnx_opset_version()
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > known:
            raise ValueError(f"model.path: {path} uses opset {imp.version}; the pinned onnx "
                             f"{version('onnx')} and onnx2tf {version('onnx2tf')} know opsets "
                             f"up to {known}: export it with opset {known} or lower")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ValueError(f"model.path: {path} is not a valid ONNX model "
                         f"({_one_line(exc)})") from None
    unknown = [(n.op_type, n.name or "?") for n in model.graph.node
               if n.domain not in ("", "ai.onnx") or importlib.util.find_spec(
                   f"onnx2tf.ops.{n.op_type}") is None]
    if unknown:
        ops = ", ".join(sorted({op for op, _ in unknown}))
        raise ValueError(f"model.path: {path} has op(s) onnx2tf {version('onnx2tf')} cannot "
                         f"convert: {ops} (node {unknown[0][1]!r}"
                         f"{f' and {len(unknown) - 1} more' if len(unknown) > 1 else ''})")
    return model


def onnx_input(model: Any) -> tuple[str, tuple[int | None, ...]]:
    """The graph's one image input: its name and shape (None for a free dimension)."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise ValueError(f"model.path: the ONNX model must have one input and one output, it "
                         f"has {len(inputs)} and {len(model.graph.output)}")
    dims = inputs[0].type.tensor_type.shape.dim
    return inputs[0].name, tuple(d.dim_value if d.HasField("dim_value") else None
                                 for d in dims)


def layout_of(shape: tuple[int | None, ...], sample: tuple[int, ...], where: str) -> str:
    """`nhwc` if the model's input (batch first) takes the data's samples as they are,
    `nchw` if it takes them channels first.

    Raises:
        ValueError: if it takes neither.
    """
    def fits(dims: tuple[int | None, ...], want: tuple[int, ...]) -> bool:
        return len(dims) == len(want) and all(d in (None, w) for d, w in zip(dims, want))

    rest = shape[1:]
    if len(sample) == 3 and fits(rest, (sample[2], sample[0], sample[1])) and not (
            fits(rest, sample) and sample[2] != 1):
        return "nchw"
    if fits(rest, sample):
        return "nhwc"
    shown = tuple("any" if d is None else d for d in rest)
    raise ValueError(f"{where}: the model takes inputs of shape {shown}, but the data's "
                     f"samples are {tuple(sample)} (NHWC; {sample[2:] + sample[:2]} as NCHW); "
                     "change data.image_size / data.channels or bring a model that fits")


def onnx_intake(cfg: ConvertedModelConfig, ds: Dataset, range_text: str, out: Path
                ) -> dict[str, Any]:
    """Convert the ONNX file into `out/saved_model` and measure its fidelity; returns the
    facts written to `intake.json`.

    Raises:
        FileNotFoundError, ValueError: bad input (one line), a conversion onnx2tf refuses,
            or fidelity beyond tolerance.
    """
    import onnxruntime

    from pipeline.produce import model_store

    started = time.perf_counter()
    model = read_onnx(cfg.path)
    name, shape = onnx_input(model)
    layout = layout_of(shape, ds.input_shape, "model.path")
    opset = max((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")),
                default=0)
    log.info("converting %s (ONNX opset %d, input %s %s) with onnx2tf %s ...", cfg.path,
             opset, name, layout.upper(), version("onnx2tf"))
    with tempfile.TemporaryDirectory(prefix="onnx2tf.") as tmp:
        _run_onnx2tf(Path(cfg.path).expanduser(), Path(tmp), name, layout)
        shutil.copytree(Path(tmp), out / SAVED_MODEL,
                        ignore=shutil.ignore_patterns("*.tflite", "*.json"))
    seconds = time.perf_counter() - started
    saved = out / SAVED_MODEL
    loaded, _, _ = model_store.load_user_model(saved)
    model_store.check_fits(loaded, ds.input_shape, ds.num_classes, where="model.path")
    session = onnxruntime.InferenceSession(str(Path(cfg.path).expanduser()),
                                           providers=["CPUExecutionProvider"])

    def original(batch: np.ndarray) -> np.ndarray:
        if layout == "nchw":
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        return session.run(None, {name: batch})[0]

    log.info("fidelity: onnxruntime %s against the converted model on %d test samples ...",
             version("onnxruntime"), len(ds.x_test))
    fid = fidelity(_batched(ds.x_test, original),
                   model_store.predict(saved, ds.x_test))
    runtime = f"onnxruntime {version('onnxruntime')}"
    log.info("fidelity: max |difference| %.3g, top-1 agreement %.4f", fid["max_abs_diff"],
             fid["agreement"])
    check_fidelity(fid, cfg, runtime)
    return {"format": ONNX, "origin": str(Path(cfg.path).expanduser().resolve()),
            "opset": opset, "input": name, "layout": layout,
            "converter": f"onnx2tf {version('onnx2tf')}", "runtime": runtime,
            "fed": fed(ds, layout, range_text), "seconds": round(seconds, 2),
            "fidelity": fid}


def _run_onnx2tf(path: Path, out: Path, input_name: str, layout: str) -> None:
    """onnx2tf's conversion into `out` (its SavedModel; its own `.tflite` files are not
    used: every variant is made here). Its console output goes to the debug log."""
    try:
        import onnx2tf
    except ImportError as exc:
        raise ValueError(f"model=onnx needs onnx2tf, which is not installed ({exc}); "
                         "run make venv") from None
    kwargs: dict[str, Any] = {"input_onnx_file_path": str(path), "output_folder_path": str(out),
                              "non_verbose": True, "not_use_onnxsim": True}
    if layout == "nhwc":
        kwargs["keep_nwc_or_nhwc_or_ndhwc_input_names"] = [input_name]
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            onnx2tf.convert(**kwargs)
    except BaseException as exc:  # it calls sys.exit on some errors
        if isinstance(exc, KeyboardInterrupt):
            raise
        tail = " ".join(buffer.getvalue().split()[-40:])
        raise ValueError(f"model.path: onnx2tf {version('onnx2tf')} could not convert "
                         f"{path.name} ({_one_line(exc)}) {tail}".strip()) from None
    finally:
        log.debug("onnx2tf: %s", buffer.getvalue())
    if not (out / "saved_model.pb").is_file():
        raise ValueError(f"model.path: onnx2tf {version('onnx2tf')} wrote no SavedModel for "
                         f"{path.name}")


# --- PyTorch -------------------------------------------------------------------------------

def import_torch() -> tuple[Any, Any]:
    """`(torch, litert_torch)`.

    Raises:
        ValueError: if the torch extra is not installed.
    """
    try:
        import torch
        import litert_torch
    except ImportError as exc:
        raise ValueError(f"model=torch needs PyTorch and litert-torch ({exc}): "
                         f"{TORCH_EXTRA}") from None
    return torch, litert_torch


def load_torch_module(path: str) -> Any:
    """The user's module in eval mode: a `torch.export` program (`.pt2`), or
    `module:function` called with no arguments.

    Raises:
        FileNotFoundError: a missing `.pt2`.
        ValueError: not a torch export, not importable, or not a module.
    """
    torch, _ = import_torch()
    if path.endswith(".pt2") or Path(path).expanduser().is_file():
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"model.path: {file} does not exist (a .pt2 file)")
        quiet = logging.getLogger("torch.export")  # it logs the traceback as a warning
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            return torch.export.load(str(file)).module()
        except Exception as exc:
            raise ValueError(f"model.path: {file} is not a torch.export program "
                             f"({_one_line(exc)}); save one with torch.export.save") from None
        finally:
            quiet.setLevel(level)
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"model.path: {path!r} is neither a .pt2 file nor `module:function`")
    try:
        built = getattr(importlib.import_module(module_name), attr)()
    except Exception as exc:
        raise ValueError(f"model.path: {path} could not build the model "
                         f"({_one_line(exc)})") from None
    if not isinstance(built, torch.nn.Module):
        raise ValueError(f"model.path: {path} returned a {type(built).__name__}, not a "
                         "torch.nn.Module")
    return built.eval()


def nhwc_module(module: Any, layout: str) -> Any:
    """The module taking NHWC images: a transpose in front of an NCHW one."""
    torch, _ = import_torch()

    class Nhwc(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Any) -> Any:
            return self.inner(x.permute(0, 3, 1, 2))

    # no .eval() here: a loaded torch.export program refuses train()/eval(); a module built
    # by `module:function` was put in eval mode when loaded
    return Nhwc(module) if layout == "nchw" else module


def _batch_dim() -> Any:
    torch, _ = import_torch()
    return torch.export.Dim("batch", min=1, max=65536)


def export_program(module: Any, sample: np.ndarray) -> Any:
    """`torch.export` of the NHWC module with a free batch size (traced on two samples, as
    torch.export fixes a dimension of size 1; `Dim.AUTO`, so that a loaded program's own
    batch range is kept), checked on 1 and 3 samples; else of batch 1."""
    torch, _ = import_torch()
    one = torch.from_numpy(np.asarray(sample[:1], np.float32))
    try:
        program = torch.export.export(module, (one.repeat(2, *[1] * (one.dim() - 1)),),
                                      dynamic_shapes=({0: torch.export.Dim.AUTO},))
        with torch.no_grad():
            for n in (1, 3):
                program.module()(one.repeat(n, *[1] * (one.dim() - 1)))
        return program
    except Exception as exc:
        log.info("torch.export with a free batch size failed (%s); batch 1", _one_line(exc))
        return torch.export.export(module, (one,))


def torch_outputs(module: Any, x: Any) -> np.ndarray:
    """The module's outputs on `x`, in batches (one sample at a time for a module exported
    with a fixed batch of 1)."""
    torch, _ = import_torch()

    def run(b: np.ndarray) -> np.ndarray:
        return module(torch.from_numpy(b)).detach().numpy()

    with torch.no_grad():
        try:
            run(np.asarray(x[:2], np.float32))
            batch = BATCH
        except Exception:
            batch = 1
        return _batched(x, run, batch)


def to_tflite(program: Any, sample: np.ndarray, quant_config: Any = None,
              free_batch: bool = True) -> bytes:
    """litert-torch's conversion of an exported program's module (a PT2E-quantized one with
    its `quant_config`) into `.tflite` bytes, its console output in the debug log; with a
    free batch size if it can (`free_batch`), else batch 1.

    Raises:
        ValueError: with litert-torch's message, in one line.
    """
    torch, litert_torch = import_torch()
    module = program.module() if hasattr(program, "module") else program
    two = torch.from_numpy(np.repeat(np.asarray(sample[:1], np.float32), 2, axis=0))
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            edge = None
            if free_batch:  # so that evaluation runs batches
                try:
                    edge = litert_torch.convert(module, (two,), quant_config=quant_config,
                                                dynamic_shapes=({0: _batch_dim()},))
                except Exception as exc:
                    log.info("litert-torch with a free batch size failed (%s); batch 1",
                             _one_line(exc))
            if edge is None:
                edge = litert_torch.convert(module, (two[:1],), quant_config=quant_config)
        with tempfile.TemporaryDirectory(prefix="litert_torch.") as tmp:
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                edge.export(str(Path(tmp) / "model.tflite"))
            return (Path(tmp) / "model.tflite").read_bytes()
    except Exception as exc:
        raise ValueError(f"litert-torch {version('litert-torch')} could not convert the "
                         f"model ({_one_line(exc)})") from None
    finally:
        log.debug("litert-torch: %s", buffer.getvalue())


def torch_intake(cfg: ConvertedModelConfig, ds: Dataset, range_text: str, out: Path
                 ) -> dict[str, Any]:
    """Convert the PyTorch model into `out/model.tflite` (and keep `out/program.pt2`) and
    measure its fidelity; returns the facts written to `intake.json`.

    Raises:
        FileNotFoundError, ValueError: bad input, a missing extra, a conversion litert-torch
            refuses, or fidelity beyond tolerance.
    """
    from pipeline.measure import litert

    torch, _ = import_torch()
    started = time.perf_counter()
    module = nhwc_module(load_torch_module(cfg.path), cfg.layout)
    sample = np.asarray(ds.x_test[:1], np.float32)
    try:
        with torch.no_grad():
            module(torch.from_numpy(sample))
    except Exception as exc:
        want = "NCHW" if cfg.layout == "nchw" else "NHWC"
        raise ValueError(f"model.path: the module does not take the data's samples "
                         f"{tuple(ds.input_shape)} as {want} (model.layout={cfg.layout}): "
                         f"{_one_line(exc)}") from None
    log.info("converting %s (PyTorch %s, %s input) with litert-torch %s ...", cfg.path,
             version("torch"), cfg.layout.upper(), version("litert-torch"))
    try:
        program = export_program(module, sample)
    except Exception as exc:
        raise ValueError(f"model.path: torch.export could not export {cfg.path} "
                         f"({_one_line(exc)})") from None
    (out / FLOAT_TFLITE).write_bytes(to_tflite(program, sample))
    torch.export.save(program, str(out / PROGRAM))
    seconds = time.perf_counter() - started
    runner = litert.Runner(out / FLOAT_TFLITE, batch_size=BATCH)
    if runner.sample_shape != tuple(ds.input_shape):
        raise ValueError(f"model.path: the converted model takes {runner.sample_shape}, the "
                         f"data's samples are {tuple(ds.input_shape)}")
    log.info("fidelity: torch %s against the converted model on %d test samples ...",
             version("torch"), len(ds.x_test))
    fid = fidelity(torch_outputs(module, ds.x_test), runner.predict(ds.x_test))
    runtime = f"torch {version('torch')}"
    log.info("fidelity: max |difference| %.3g, top-1 agreement %.4f", fid["max_abs_diff"],
             fid["agreement"])
    check_fidelity(fid, cfg, runtime)
    return {"format": TORCH, "origin": cfg.path, "layout": cfg.layout,
            "converter": f"litert-torch {version('litert-torch')}", "runtime": runtime,
            "fed": fed(ds, cfg.layout, range_text), "seconds": round(seconds, 2),
            "batch": runner.batch_size, "fidelity": fid}


# --- the stage --------------------------------------------------------------------------------

def run(cfg: ConvertedModelConfig | None, ds: Dataset, range_text: str, out_dir: Path
        ) -> dict[str, Any]:
    """Write the intake folder (replaced atomically): the converted model and `intake.json`,
    or only `intake.json` (`{"format": "keras"}`) when `cfg` is None (a Keras model)."""
    with atomic_dir(out_dir) as tmp:
        if cfg is None:
            info: dict[str, Any] = {"format": "keras"}
        else:
            convert = {ONNX: onnx_intake, TORCH: torch_intake}[cfg.arch]
            try:
                info = convert(cfg, ds, range_text, tmp)
            except (ValueError, FileNotFoundError):
                raise  # ours: one line already
            except Exception as exc:  # a converter or runtime on the user's model: one line
                raise ValueError(f"model.path: the {cfg.arch} intake of {cfg.path} failed "
                                 f"({_one_line(exc)})") from None
        write_json(tmp / INFO, info)
    return info
