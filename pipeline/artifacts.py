"""The variant folder format, shared by the stage that writes it (quantize) and the stages
that read it (evaluate, benchmark, report, track). No TensorFlow.

A variant's folder (`Layout.variant(name)`) holds:
- `conversion.json` (always): `variant`, `status` (`ok` or `failed`), `error`, `seconds`,
  `inspection` (`pipeline.measure.inspection`), `denylisted_nodes`, `worst_layers`;
- `<name>.tflite` when the conversion succeeded;
- `layer_errors.csv` for the full-integer variants (per-layer error, worst first);
- `recipe.json` (LiteRT Quantizer variants): the recipe the quantizer applied, and
  `precision.csv`: per weight op, what the recipe asked and what the op got;
- `tensor_errors.csv` and `model_explorer/` (every variant the comparison works on): each
  tensor's error against the float model, and the Model Explorer overlays of it;
- `search_*` for a variant found by the search: its trials, their plot, the per-layer
  decisions, and the rules that reproduce it without searching.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.io import atomic_dir, read_json, write_json

RECORD = "conversion.json"
LAYER_ERRORS = "layer_errors.csv"
RECIPE = "recipe.json"
PRECISION = "precision.csv"
EQUALIZATION = "equalization.csv"  # equalized layers' channel ranges, before and after
TENSOR_ERRORS = "tensor_errors.csv"
OVERLAYS = "model_explorer"
SEARCH_TRIALS = "search_trajectory.csv"  # the search (`pipeline.produce.search`): each trial,
SEARCH_PLOT = "search_trajectory.png"  # its plot,
SEARCH_DECISIONS = "search_decisions.csv"  # each layer's precision and why,
SEARCH_RULES = "search_rules.yaml"  # and the rules that give the same model again
MAX_ERROR_CHARS = 4000  # converter messages can carry whole MLIR dumps


def tflite_path(variant_dir: str | Path, name: str) -> Path:
    """Where variant `name`'s model lives in its folder."""
    return Path(variant_dir) / f"{name}.tflite"


def new_record(name: str) -> dict[str, Any]:
    """The record of a variant before anything was tried: status `ok`, nothing measured."""
    return {"variant": name, "status": "ok", "error": None, "inspection": None,
            "denylisted_nodes": [], "worst_layers": []}


def record_failure(name: str, variant_dir: str | Path, error: str) -> dict[str, Any]:
    """Write the folder of a variant that could not even be attempted (its source model is
    unavailable): only `conversion.json`, failed with `error`."""
    record = {**new_record(name), "status": "failed", "error": error[:MAX_ERROR_CHARS],
              "seconds": 0.0}
    with atomic_dir(variant_dir) as out:
        write_json(out / RECORD, record)
    return record


def read_record(variant_dir: str | Path) -> dict[str, Any]:
    """The `conversion.json` record of a variant folder.

    Raises:
        FileNotFoundError: if the folder has no record (the quantize stage has not run).
    """
    path = Path(variant_dir) / RECORD
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the quantize stage")
    return read_json(path)


def skipped(stage: str) -> dict[str, Any]:
    """What evaluate or benchmark writes for a variant whose conversion failed."""
    return {"status": "failed", "error": f"{stage} skipped: the conversion failed"}
