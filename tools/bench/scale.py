"""Scale check: does memory follow the data? An image folder of 128x128 RGB PNGs is
generated at two sizes (2,000 and 8,000 images by default) and run, size by size, through the
real stage scripts: prepare, train (one epoch), quantize (int8, calibrated; float32 for the
reference), reference, evaluate and benchmark. Each stage's peak RSS (the kernel's count for
that process) and wall time are printed at both sizes with their ratio, and the prepared
data's size on disk against its decoded 8-bit pixels.

Goal: every stage but train grows by at most 1.2x when the data grows 4x; the store is at
most 1.1x the pixels.

    python -m tools.bench --only scale [--sizes 2000 8000]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from tools.bench.common import run_stage
from pipeline.params import compose, render_params
from pipeline.layout import Layout

SIDE = 128  # pixels per side
CLASSES = 10
STAGES = (("prepare",), ("train",), ("quantize", "float32"), ("quantize", "int8"),
          ("reference",), ("evaluate", "int8"), ("benchmark", "int8"))


def image_folder(root: Path, count: int, seed: int = 0) -> Path:
    """`count` PNGs in `CLASSES` class folders: noise around a class's own colour and
    stripe, so a model can learn them."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(CLASSES):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
    base = rng.integers(40, 216, (CLASSES, 3))
    for i in range(count):
        c = i % CLASSES
        pixels = rng.normal(base[c], 30, (SIDE, SIDE, 3))
        pixels[:, (c * 12) % SIDE:(c * 12) % SIDE + 8] = 255  # a stripe per class
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            root / f"class_{c}" / f"{i}.png", compress_level=1)
    return root


def measure(count: int, work: Path) -> dict[str, tuple[float, float]]:
    """Every stage on `count` images; `{stage: (seconds, peak RSS MiB)}` plus the store's
    bytes on disk (`store_bytes`)."""
    images = image_folder(work / "images", count)
    raw = compose(["data=image_folder", f"data.path={images}", f"data.image_size=[{SIDE},{SIDE}]",
                   "data.channels=3", "train.epochs=1", "benchmark.memory=false",
                   "benchmark.num_threads=[1]", "benchmark.min_seconds=0.3",
                   "calibration=off"])  # the two variants kept: int8 only is calibrated
    raw["quantization"]["variants"] = {v: raw["quantization"]["variants"][v]
                                       for v in ("float32", "int8")}
    lay = Layout(work / "lab")
    lay.root.mkdir()
    (lay.root / "params.yaml").write_text(render_params(raw))
    figures = {" ".join(stage): run_stage(*stage, root=lay.root) for stage in STAGES}
    figures["store_bytes"] = (sum(f.stat().st_size for f in lay.dataset.iterdir()), 0.0)
    return figures


def main(sizes: tuple[int, int] = (2000, 8000)) -> dict[int, dict[str, tuple[float, float]]]:
    small, big = sizes
    results = {}
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix=f"scale{n}-") as tmp:
            results[n] = measure(n, Path(tmp))
    growth = big / small
    print(f"scale check: {SIDE}x{SIDE} RGB PNGs, {small} then {big} images "
          f"(data x{growth:.1f}); peak RSS of the stage's process and wall time")
    print(f"   {'stage':18s} {'RSS ' + str(small):>10s} {'RSS ' + str(big):>10s} {'ratio':>6s}"
          f" {'s ' + str(small):>8s} {'s ' + str(big):>8s}")
    for stage in (" ".join(s) for s in STAGES):
        (t1, m1), (t2, m2) = results[small][stage], results[big][stage]
        goal = "" if stage == "train" else ("  ok" if m2 / m1 <= 1.2 else "  over 1.2x")
        print(f"   {stage:18s} {m1:8.0f} MB {m2:8.0f} MB {m2 / m1:6.2f} {t1:8.1f} {t2:8.1f}{goal}")
    for n in sizes:
        pixels = n * SIDE * SIDE * 3
        stored = results[n]["store_bytes"][0]
        print(f"   prepared data, {n} images: {stored / 2**20:.1f} MiB on disk, "
              f"{stored / pixels:.3f}x the decoded 8-bit pixels (goal <= 1.1x)")
    return results


if __name__ == "__main__":
    main()
