"""Run the model with LiteRT (`ai_edge_litert`) as the lab measured it: the input range and
the input quantization, the output dequantization and the class names come from `io.json`.

    python predict.py digit.png                   # an image file: its top classes
    python predict.py samples.npz                 # every sample of the array `x` in it
    python predict.py samples.npz --out pred.npy  # and the predicted class of each, saved

An image file is read as 8-bit pixels (0..255), in grey or RGB as the model takes it, and
resized to its input size; an `.npz` holds raw samples as the lab's data stores them
(`io.json`: `input_range.divide_by` turns them into [0, 1]). Needs numpy and ai-edge-litert
(and Pillow for image files).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
IMAGE_SCALE = 255.0  # an image file's pixels, 0..255, to [0, 1]


def load_io(folder: Path = HERE) -> dict:
    return json.loads((folder / "io.json").read_text(encoding="utf-8"))


def to_model_range(x01: np.ndarray, io: dict) -> np.ndarray:
    """[0, 1] pixels to the model's input range: `x * multiply + add` (per channel if
    lists), as in training, calibration and evaluation."""
    rng = io["input_range"]
    x = np.asarray(x01, np.float32) * np.asarray(rng["multiply"], np.float32)
    return (x + np.asarray(rng["add"], np.float32)).astype(np.float32)


def quantize(x: np.ndarray, tensor: dict) -> np.ndarray:
    """Float model inputs to the input tensor's type: `round(x / scale + zero_point)`,
    clipped to the type (the same float32 operations the lab's evaluation does)."""
    dtype = np.dtype(tensor["dtype"])
    if not tensor["quantized"]:
        return np.asarray(x, dtype)
    q = np.multiply(x, np.float32(1.0 / tensor["scale"]), dtype=np.float32)
    q += np.float32(tensor["zero_point"])
    np.rint(q, out=q)
    info = np.iinfo(dtype)
    np.clip(q, info.min, info.max, out=q)
    return q.astype(dtype)


def dequantize(y: np.ndarray, tensor: dict) -> np.ndarray:
    """The output tensor's values as floats: `scale * (y - zero_point)`."""
    if not tensor["quantized"]:
        return np.asarray(y, np.float32)
    return ((y.astype(np.float32) - tensor["zero_point"]) * tensor["scale"]).astype(np.float32)


def read_image(path: Path, io: dict) -> np.ndarray:
    """One image file as [0, 1] pixels of the model's input shape `(1, h, w, c)`."""
    from PIL import Image

    _, h, w, c = io["input"]["shape"]
    image = Image.open(path).convert("L" if c == 1 else "RGB").resize((w, h))
    return (np.asarray(image, np.float32) / IMAGE_SCALE).reshape(1, h, w, c)


def read_npz(path: Path, io: dict, key: str = "x") -> np.ndarray:
    """Raw samples of an `.npz` as [0, 1] pixels (the data's own scale: `divide_by`)."""
    with np.load(path) as f:
        if key not in f:
            sys.exit(f"error: {path} has no array {key!r}; it has {', '.join(f.files)}")
        x = np.asarray(f[key], np.float32)
    shape = tuple(io["input"]["shape"][1:])
    if x.shape[1:] != shape:
        sys.exit(f"error: {path}:{key} holds samples of shape {x.shape[1:]}; the model takes "
                 f"{shape}")
    return x / np.float32(io["input_range"]["divide_by"])


def predict(x01: np.ndarray, folder: Path = HERE) -> np.ndarray:
    """Dequantized scores `(n, classes)` of [0, 1] pixel samples, one invoke per sample."""
    from ai_edge_litert.interpreter import Interpreter

    io = load_io(folder)
    interpreter = Interpreter(model_path=str(folder / "model.tflite"), num_threads=1)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    scores = []
    for sample in to_model_range(x01, io):
        interpreter.set_tensor(inp["index"], quantize(sample[None], io["input"]))
        interpreter.invoke()
        scores.append(dequantize(interpreter.get_tensor(out["index"]), io["output"])[0])
    return np.stack(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="an image file, or an .npz of raw samples")
    parser.add_argument("--key", default="x", help="the array of the .npz (default: x)")
    parser.add_argument("--top", type=int, default=3, help="classes to print per sample")
    parser.add_argument("--out", type=Path, help="save each sample's predicted class (.npy)")
    args = parser.parse_args()
    if not args.input.is_file():
        sys.exit(f"error: {args.input} does not exist")
    io = load_io()
    x = read_npz(args.input, io, args.key) if args.input.suffix == ".npz" else \
        read_image(args.input, io)
    scores = predict(x)
    classes = io["classes"]
    for i, row in enumerate(scores[:20]):
        best = np.argsort(row)[::-1][:args.top]
        print(f"{i}: " + ", ".join(f"{classes[c]} {row[c]:.3f}" for c in best))
    if len(scores) > 20:
        print(f"... {len(scores)} samples")
    if args.out:
        np.save(args.out, scores.argmax(axis=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
