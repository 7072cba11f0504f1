"""The lab's stored Keras models, and users' own model files (imports TensorFlow).

A stored model is a folder (`models/keras/float`, `models/keras/qat`) holding `model.json`
and:
- `saved_model/`: what every variant is converted from. Exporting once here, instead of
  letting each conversion re-trace the Keras model (`from_keras_model` saves a SavedModel
  internally every time), makes each conversion several times cheaper on real models;
- `model.tflite`: its plain float conversion, what the LiteRT Quantizer's variants start
  from;
- `model.h5` as well, for a Sequential or Functional `tf_keras` model, the only kind QAT can
  annotate (`.h5` because tf_keras' `.keras` format does not restore tfmot's
  `QuantizeLayer`); anything else (a subclassed model, a Keras 3 model, a plain SavedModel)
  has only the SavedModel, and QAT is not possible;
- nothing, when the model could not be made (QAT of a model QAT cannot annotate):
  `model.json` then says why, and the variants made from it are recorded as failed.

A user's file (`model.name: file`, `model.path`) may be `.keras`, `.h5` or a SavedModel
folder. It is loaded in Keras safe mode (no Python `lambda` code from the file) unless
`model.safe_mode: false`, and its input must fit the data before anything else runs.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import shutil
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.io import atomic_dir, read_json, write_json
from pipeline.tfcompat import import_tf

log = logging.getLogger(__name__)

INFO = "model.json"
H5 = "model.h5"
SAVED_MODEL = "saved_model"
FLOAT_TFLITE = "model.tflite"  # the plain float conversion: the LiteRT Quantizer's input
TORCH_PROGRAM = "program.pt2"  # a PyTorch model's exported program (litert-torch's variants)
TFLITE_ONLY = "tflite"  # the format of a float model that is only a .tflite (from PyTorch)
NOT_TENSORFLOW = ("the float model came from PyTorch (converted by litert-torch into a .tflite): "
                  "this needs a TensorFlow model; the LiteRT Quantizer's and litert-torch's "
                  "variants run on it")
QAT_CONVERTED_HOW_TO = ("a model from ONNX or PyTorch is fine-tuned in its own framework "
                        "(PyTorch: PT2E's prepare_qat_pt2e) and brought here after")
QAT_HOW_TO = ("to get QAT too, build the model with tf_keras' Sequential or Functional API "
              "(`import tf_keras as keras`) and save it as .h5 or .keras")


class ModelUnavailable(Exception):
    """A stored model that could not be made (its `model.json` says why)."""


def qat_blocker(model: Any) -> str | None:
    """Why QAT cannot annotate `model`, or None if it can (Sequential or Functional tf_keras).
    """
    _, keras = import_tf()
    if isinstance(model, Path):
        return "the model is a SavedModel without a Sequential or Functional tf_keras model in it"
    if not isinstance(model, keras.Model):
        return (f"the model is a Keras 3 model ({type(model).__name__}); "
                "tensorflow-model-optimization's QAT works only on tf_keras (Keras 2) models")
    if isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False):
        return None
    return (f"the model is a subclassed model ({type(model).__name__}); QAT can annotate only "
            "Sequential or Functional models")


def save(model: Any, out_dir: str | Path, info: dict[str, Any] | None = None,
         blocker: str | None = None, float_tflite: bool = True) -> Path:
    """Store a model in `out_dir` (replaced atomically), as `model.h5` when QAT can use it,
    else as `saved_model/`.

    Args:
        model: A tf_keras model, a Keras 3 model, or the path of a SavedModel folder.
        info: More facts for `model.json` (where the model came from, ...).
        blocker: Why QAT cannot use the model, when the caller knows better than
            `qat_blocker(model)` (a SavedModel's path says little).
        float_tflite: Also store its plain float `.tflite` (the float model; a QAT model's
            variants come from the converter only).
    """
    tf, keras = import_tf()
    blocker = blocker or qat_blocker(model)
    with atomic_dir(out_dir) as tmp:
        if blocker is None:
            with warnings.catch_warnings():  # "HDF5 is legacy": chosen on purpose, see above
                warnings.simplefilter("ignore", UserWarning)
                model.save(tmp / H5, include_optimizer=False)
            export_inference(model, tmp / SAVED_MODEL)
            fmt = "h5"
        elif isinstance(model, Path):
            shutil.copytree(model, tmp / SAVED_MODEL)
            fmt = "saved_model"
        elif isinstance(model, keras.Model):  # subclassed tf_keras
            model.save(tmp / SAVED_MODEL, save_format="tf", include_optimizer=False)
            fmt = "saved_model"
        else:  # Keras 3
            model.export(str(tmp / SAVED_MODEL), format="tf_saved_model", verbose=False)
            fmt = "saved_model"
        if float_tflite:
            _export_float_tflite(tmp / SAVED_MODEL, tmp / FLOAT_TFLITE)
        write_json(tmp / INFO, {"status": "ok", "format": fmt, "qat_blocker": blocker,
                                **(info or {})})
    return Path(out_dir)


def export_inference(model: Any, path: Path) -> Path:
    """Export a Sequential or Functional tf_keras model's forward pass (inference mode) as
    the SavedModel its variants are converted from.

    Only the forward pass: tf_keras' `ExportArchive` (what `model.export` uses), not
    `tf.saved_model.save(model)`, whose SavedModel keeps every layer's functions (629 of them
    for MobileNetV2) that the converter then loads back twice per conversion. Measured on
    MobileNetV2 (alpha 0.35, 96x96): export 6 s instead of 27 s, and each conversion 6.5 s
    instead of 20 s. The serving signature keeps the Keras names of the inputs and outputs.
    """
    import contextlib
    import io

    tf, keras = import_tf()
    started = time.perf_counter()
    log.info("exporting the SavedModel every variant is converted from ...")
    specs = [tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=n)
             for t, n in zip(model.inputs, model.input_names)]
    names = list(model.output_names)

    def forward(*inputs: Any) -> dict[str, Any]:
        outputs = model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
        return dict(zip(names, tf.nest.flatten(outputs)))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", tf.function(forward, autograph=False),
                         input_signature=specs)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the endpoint's signature
        archive.write_out(str(path))
    log.info("exported in %.1f s", time.perf_counter() - started)
    return path


def _export_float_tflite(saved_model: Path, out: Path) -> None:
    """The model's plain float `.tflite`, converted once from its SavedModel: what the LiteRT
    Quantizer's variants start from (it takes a `.tflite`, not a Keras model). A model the
    converter refuses gets none; its variants then fail with the reason."""
    from pipeline.produce import convert
    from pipeline.variants import ConverterVariant

    try:
        out.write_bytes(convert.convert(saved_model, ConverterVariant(name="float", source="float")))
    except Exception as exc:  # the converter on the user's model: recorded, not raised
        log.warning("no float .tflite for the LiteRT Quantizer: %s", str(exc).splitlines()[0])
        out.with_suffix(".error.txt").write_text(f"{type(exc).__name__}: {exc}"[:4000])


def float_tflite(model_dir: str | Path) -> Path:
    """The stored model's plain float `.tflite` (`_export_float_tflite`).

    Raises:
        ModelUnavailable: if the model, or its float conversion, could not be made.
    """
    info = read_info(model_dir)
    if info["status"] != "ok":
        raise ModelUnavailable(info["reason"])
    path = Path(model_dir) / FLOAT_TFLITE
    if not path.is_file():
        error = path.with_suffix(".error.txt")
        raise ModelUnavailable("the float model could not be converted to .tflite: "
                               + (error.read_text() if error.is_file() else "unknown"))
    return path


def save_tflite(out_dir: str | Path, tflite: Path, program: Path | None,
                info: dict[str, Any]) -> Path:
    """Store a float model that exists only as a `.tflite` (a PyTorch model converted by
    litert-torch), with its exported program for litert-torch's own variants."""
    with atomic_dir(out_dir) as tmp:
        shutil.copyfile(tflite, tmp / FLOAT_TFLITE)
        if program is not None:
            shutil.copyfile(program, tmp / TORCH_PROGRAM)
        write_json(tmp / INFO, {"status": "ok", "format": TFLITE_ONLY,
                                "qat_blocker": NOT_TENSORFLOW, **info})
    return Path(out_dir)


def torch_program(model_dir: str | Path) -> Path:
    """The stored PyTorch model's exported program (`program.pt2`).

    Raises:
        ModelUnavailable: if the model is not a PyTorch model, or could not be made.
    """
    info = read_info(model_dir)
    if info["status"] != "ok":
        raise ModelUnavailable(info["reason"])
    path = Path(model_dir) / TORCH_PROGRAM
    if not path.is_file():
        raise ModelUnavailable("litert-torch's variants need a PyTorch model (model=torch); "
                               f"this float model is {info.get('kind') or info['format']}")
    return path


def torch_program_missing() -> Path:
    """For a model given in hand (tests, tools): it has no exported program."""
    raise ModelUnavailable("litert-torch's variants need a PyTorch model (model=torch)")


def save_unavailable(out_dir: str | Path, reason: str, **info: Any) -> Path:
    """Record in `out_dir` that the model could not be made, and why."""
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / INFO, {"status": "unavailable", "reason": reason, **info})
    return Path(out_dir)


def read_info(model_dir: str | Path) -> dict[str, Any]:
    """A stored model's `model.json`.

    Raises:
        FileNotFoundError: if the folder holds no stored model.
    """
    path = Path(model_dir) / INFO
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} holds no stored model (no {INFO}); run the stage "
                                "that makes it")
    return read_json(path)


def conversion_source(model_dir: str | Path) -> Path:
    """The SavedModel every variant of a stored model is converted from.

    Raises:
        FileNotFoundError: if the folder holds no stored model.
        ModelUnavailable: if the model could not be made; the message says why.
    """
    info = read_info(model_dir)
    if info["status"] != "ok":
        raise ModelUnavailable(info["reason"])
    if info["format"] == TFLITE_ONLY:
        raise ModelUnavailable(NOT_TENSORFLOW)
    return Path(model_dir) / SAVED_MODEL


def register_custom_objects(names: list[str] | tuple[str, ...]) -> None:
    """Import the classes that a user's layers need (`model.custom_objects`: `module:Class`
    or `module.Class`) and register them with Keras, so this process can load the file and
    the stored models made from it.

    Raises:
        ValueError: if one cannot be imported.
    """
    import importlib

    _, keras = import_tf()
    for name in names:
        module, sep, attr = name.partition(":")
        if not sep:
            module, _, attr = name.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ValueError(f"model.custom_objects: cannot import {name!r} "
                             f"({_one_line(exc)})") from None
        keras.utils.get_custom_objects()[attr] = obj
        try:  # a Keras 3 file looks its classes up in Keras 3's registry
            import keras as keras3

            keras3.saving.get_custom_objects()[attr] = obj
        except ImportError:
            pass


def load(model_dir: str | Path, qat: bool = False) -> Any:
    """Load a stored model: a tf_keras model (`model.h5`), or the path of its SavedModel.
    The classes its layers need (`model.custom_objects` of a user's file) are the ones its
    `model.json` names (`custom_objects`), so that loading it reads no config.

    Args:
        qat: Bring tfmot's custom objects into scope (a QAT model).

    Raises:
        FileNotFoundError: if the folder holds no stored model.
        ModelUnavailable: if the model could not be made; the message says why.
    """
    model_dir = Path(model_dir)
    info = read_info(model_dir)
    if info["status"] != "ok":
        raise ModelUnavailable(info["reason"])
    if info["format"] == TFLITE_ONLY:
        raise ModelUnavailable(NOT_TENSORFLOW)
    if info["format"] == "saved_model":
        return model_dir / SAVED_MODEL
    _, keras = import_tf()
    register_custom_objects(info.get("custom_objects", ()))
    if qat:
        import tensorflow_model_optimization as tfmot

        with tfmot.quantization.keras.quantize_scope():
            return keras.models.load_model(model_dir / H5)
    return keras.models.load_model(model_dir / H5)


# --- users' model files ---------------------------------------------------------------------

def _keras_major(path: Path) -> int:
    """The major Keras version that saved a `.keras` or `.h5` file (2 if it does not say)."""
    version = None
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                version = json.loads(z.read("metadata.json")).get("keras_version")
        else:
            import h5py

            with h5py.File(path, "r") as f:
                version = f.attrs.get("keras_version")
    except Exception:  # not a zip with metadata, not HDF5: the loader will say what it is
        return 2
    if isinstance(version, bytes):
        version = version.decode()
    return int(str(version).split(".")[0]) if version else 2


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def load_user_model(path: str | Path, safe_mode: bool = True,
                    custom_objects: list[str] | tuple[str, ...] = ()
                    ) -> tuple[Any, str, str | None]:
    """Load a user's `.keras`, `.h5` or SavedModel folder, with the classes its layers need
    (`custom_objects`, see `register_custom_objects`).

    Returns:
        `(model, kind, qat_blocker)`: a tf_keras model (`tf_keras`), a Keras 3 model
        (`keras3`), or the SavedModel folder's path (`saved_model`) when it holds no
        Sequential or Functional tf_keras model; and why QAT cannot use it (None if it can).

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if it is not a model Keras or TensorFlow can load, or safe mode refuses
            it (a Lambda layer with Python code).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model.path: {path} does not exist")
    is_saved_model = path.is_dir()
    if is_saved_model and not (path / "saved_model.pb").is_file():
        raise ValueError(f"model.path: {path} is a folder but not a SavedModel (no "
                         "saved_model.pb); give a .keras or .h5 file or a SavedModel folder")
    suffix = path.suffix.lower()
    other = {".onnx": "an ONNX model: use model=onnx", ".pt2": "a PyTorch export: use "
             "model=torch", ".pt": "a PyTorch file: export it with torch.export.save (.pt2) "
             "and use model=torch", ".pth": "a PyTorch file: export it with torch.export.save "
             "(.pt2) and use model=torch"}.get(suffix)
    if not is_saved_model and other:
        raise ValueError(f"model.path: {path} is {other} model.path={path} (docs/models.md)")
    if not is_saved_model and suffix not in (".keras", ".h5", ".hdf5"):
        raise ValueError(f"model.path: {path} is not a .keras, .h5 or SavedModel model file")
    if suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ValueError(f"model.path: {path} is not a model file (a .keras file is a zip "
                         "archive; this one is not)")
    if suffix in (".h5", ".hdf5"):
        import h5py

        if not h5py.is_hdf5(path):
            raise ValueError(f"model.path: {path} is not a model file (an .h5 file is HDF5; "
                             "this one is not)")
    _, keras = import_tf()
    register_custom_objects(custom_objects)
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    try:
        if is_saved_model and not (path / "keras_metadata.pb").is_file():  # not from tf_keras
            model, kind = path, "saved_model"
            blocker = "the SavedModel was not saved from a tf_keras model"
        elif not is_saved_model and _keras_major(path) >= 3:
            import keras as keras3  # Keras 3, installed with TensorFlow

            model = keras3.saving.load_model(path, compile=False, safe_mode=safe_mode)
            kind, blocker = "keras3", qat_blocker(model)
        else:
            with SafeModeScope(safe_mode), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = keras.models.load_model(path, compile=False, safe_mode=safe_mode)
            kind, blocker = "tf_keras", qat_blocker(model)
            if is_saved_model and blocker is not None:
                model, kind = path, "saved_model"  # converted as saved, not as Keras revived it
    except Exception as exc:
        if safe_mode and "deserialization of a" in str(exc) and "Lambda" in str(exc):
            raise ValueError(f"model.path: {path} has a Lambda layer with Python code, which "
                             "Keras safe mode refuses to load; if you trust the file, set "
                             "model.safe_mode=false") from None
        unknown = re.search(r"Unknown (?:layer|object type|activation|initializer|"
                            r"regularizer|constraint)[^']*'(\w+)'", str(exc))
        hint = (f"; if {unknown[1]} is a class of yours or of a library, name it in "
                f"model.custom_objects (e.g. model.custom_objects=[your.module:{unknown[1]}])"
                if unknown else "")
        raise ValueError(f"model.path: {path} is not a model Keras can load "
                         f"({_one_line(exc)}){hint}") from None
    if kind == "saved_model":
        _signature(path)  # refuse a SavedModel TFLite could not convert, now
    return model, kind, blocker


@functools.lru_cache(maxsize=4)
def _signature(saved_model: Path) -> Any:
    """The SavedModel's serving signature, loaded once per process (checks, then predicts)."""
    tf, _ = import_tf()
    sig = tf.saved_model.load(str(saved_model)).signatures.get("serving_default")
    if sig is None:
        raise ValueError(f"model.path: SavedModel {saved_model} has no serving_default "
                         "signature, so TFLite cannot convert it")
    inputs = sig.structured_input_signature[1]
    if len(inputs) != 1 or len(sig.structured_outputs) != 1:
        raise ValueError(f"model.path: SavedModel {saved_model} must have one input and one "
                         f"output, it has {len(inputs)} and {len(sig.structured_outputs)}")
    return sig


def io_specs(model: Any) -> tuple[tuple[int | None, ...], tuple[int | None, ...], str]:
    """The model's input and output shapes (batch axis included) and its input dtype."""
    if isinstance(model, Path):
        sig = _signature(model)
        (spec,) = sig.structured_input_signature[1].values()
        (out,) = sig.structured_outputs.values()
        return tuple(spec.shape.as_list()), tuple(out.shape.as_list()), spec.dtype.name
    inputs, outputs = model.inputs, model.outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"model.path: the model must have one input and one output, it has "
                         f"{len(inputs)} and {len(outputs)}")
    dtype = getattr(inputs[0].dtype, "name", str(inputs[0].dtype))
    return tuple(inputs[0].shape), tuple(outputs[0].shape), dtype


def check_fits(model: Any, input_shape: tuple[int, ...], num_classes: int,
               where: str = "model.path", declared: int | None = None) -> None:
    """Refuse a model that cannot take the data's samples (shape, float32 input, a batch
    axis of any size or 1) or that has fewer scores than the data has classes. A model with
    more (a test split that lacks some of its classes) is the task: it decides the classes,
    unless `declared` (`data.num_classes`) says how many there are.

    Raises:
        ValueError: naming what the model has and what the data needs.
    """
    model_in, model_out, dtype = io_specs(model)
    if dtype != "float32":
        raise ValueError(f"{where}: the model takes {dtype} inputs; the lab feeds float32 "
                         "images in the data's input range ([0, 1] unless data.scale, "
                         "data.offset or data.normalize say otherwise)")
    if model_in and model_in[0] not in (None, 1):
        raise ValueError(f"{where}: the model's batch size is fixed at {model_in[0]}; export "
                         "it with a free batch size (None) or 1")
    sample = model_in[1:]
    fits = len(sample) == len(input_shape) and all(
        m is None or m == d for m, d in zip(sample, input_shape))
    if not fits:
        shown = tuple("any" if m is None else m for m in sample)
        raise ValueError(f"{where}: the model takes inputs of shape {shown}, but the data's "
                         f"samples are {tuple(input_shape)}; change data.image_size / "
                         "data.channels or bring a model that fits")
    width = model_out[-1] if len(model_out) == 2 else None
    if width is None or width < num_classes:
        raise ValueError(f"{where}: the model's output is {tuple(model_out)}, but the data "
                         f"has {num_classes} classes: it needs one score per class, "
                         f"(batch, {num_classes}) or more")
    if declared is not None and width != declared:
        raise ValueError(f"{where}: the model scores {width} classes, but data.num_classes "
                         f"is {declared}")
    if width > num_classes:
        log.info("%s scores %d classes; the data's labels use %d of them", where, width,
                 num_classes)


def predict(model: Any, x: Any, batch_size: int = 256) -> np.ndarray:
    """Outputs of a Keras model (2 or 3) or a SavedModel folder on `x`, read and run batch by
    batch (`x` may be a stored split; one sample per call when the model's batch size is
    fixed at 1).

    Raises:
        ValueError: if the model fails on the data, with TensorFlow's message.
    """
    if io_specs(model)[0][0] == 1:
        batch_size = 1
    try:
        if isinstance(model, Path):
            tf, _ = import_tf()
            sig = _signature(model)
            (name,) = sig.structured_input_signature[1]
            run = lambda b: next(iter(sig(**{name: tf.constant(b)}).values())).numpy()  # noqa: E731
        else:
            run = lambda b: np.asarray(model(b, training=False))  # noqa: E731
        return np.concatenate([run(np.asarray(x[i:i + batch_size], np.float32))
                               for i in range(0, len(x), batch_size)])
    except Exception as exc:  # TensorFlow's own errors: shapes, dtypes, unsupported ops
        raise ValueError(f"model.path: the model fails on the data ({_one_line(exc)})") from None


def accuracy(model: Any, x: Any, y: np.ndarray) -> float:
    """Top-1 accuracy of any loadable model (argmax of its outputs)."""
    return float(np.mean(np.argmax(predict(model, x), axis=-1) == y))
