"""`dvc.yaml`, generated: the stages with their outputs from `pipeline.layout`, and the code
each stage runs as its dependencies, computed from the stage script's import closure within
the project. So a change to any module reruns exactly the stages that import it, and
`dvc repro` saying "up to date" is true.

    python -m pipeline.dvcfile           # or: make dvc.yaml (also part of make params)
    python -m pipeline.dvcfile --check   # exit 1 if dvc.yaml is not what the code says
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from pipeline.io import write_text
from pipeline.layout import (KERAS_MODELS, LATENCY_PNG, METRICS_FILE, REPORT_FILES, SIZE_BARS_PNG,
                             SIZE_PNG, TRAINING_CSV, TRAINING_PNG, VARIANTS_CSV, Layout)
from pipeline.steps import ORDER, PER_VARIANT

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "pipeline"
DVC_FILE = ROOT / "dvc.yaml"
KEY, SOURCE, REFERENCE = "${key}", "${item.source}", "${report.reference}"  # DVC templating
# Files a module reads at run time besides Python code (module -> files or folders).
DATA_FILES = {"pipeline/report/render.py": ("pipeline/report/templates",),
              "pipeline/tracking/models.py": ("pipeline/tracking/tflite_pyfunc.py",)}


@dataclasses.dataclass(frozen=True)
class Stage:
    """One DVC stage: `python stages/<name>.py [${key}]`, run per variant if `per_variant`.

    Attributes:
        deps: Data dependencies (paths); the code dependencies are computed.
        outs: Cached outputs. `uncached`: outputs kept in git (the report). `metrics`: DVC
            metrics files (not cached).
        tensorflow: Whether the stage may import TensorFlow (a test holds the others to it).
    """

    name: str
    params: tuple[str, ...]
    deps: tuple[Path, ...] = ()
    outs: tuple[Path, ...] = ()
    uncached: tuple[Path, ...] = ()
    metrics: tuple[Path, ...] = ()
    per_variant: bool = False
    tensorflow: bool = False

    @property
    def script(self) -> str:
        return f"stages/{self.name}.py"


def stages(lay: Layout = Layout(Path("."))) -> list[Stage]:
    """The pipeline's stages in their order (`pipeline.steps.ORDER`), with paths from `lay`
    (relative to the project)."""
    specs = [
        Stage("prepare", params=("seed", "data"), outs=(lay.dataset,), tensorflow=True),
        Stage("train", params=("seed", "model", "train"), deps=(lay.dataset,),
              outs=(lay.keras("float"), lay.history("float")),
              metrics=(lay.keras_metrics("float"),), tensorflow=True),
        Stage("qat", params=("seed", "qat"), deps=(lay.dataset, lay.keras("float")),
              outs=(lay.keras("qat"), lay.history("qat")), metrics=(lay.keras_metrics("qat"),),
              tensorflow=True),
        Stage("layer_errors", params=("seed", "quantization.calibration_samples",
                                      "quantization.variants"),
              deps=(lay.dataset, lay.keras("float")), outs=(lay.layer_errors,),
              tensorflow=True),
        Stage("quantize", tensorflow=True,
              params=("seed", "quantization.calibration_samples",
                      "quantization.comparison_samples", f"quantization.variants.{KEY}"),
              deps=(lay.dataset, lay.keras(SOURCE), lay.layer_errors),
              outs=(lay.variant(KEY),)),
        Stage("reference", params=("report.reference", "evaluate.batch_size"),
              deps=(lay.dataset, lay.variant(REFERENCE)), outs=(lay.reference_outputs,)),
        Stage("evaluate", params=("evaluate",),
              deps=(lay.dataset, lay.variant(KEY), lay.reference_outputs),
              outs=(lay.evaluation(KEY),)),
        Stage("benchmark", params=("benchmark", "report.reference"),
              deps=(lay.dataset, lay.variant(KEY), lay.variant(REFERENCE)),
              outs=(lay.benchmark(KEY),)),
        Stage("footprint", params=("seed", "footprint", "evaluate.kernel_path_tolerance",
                                   "evaluate.labels"),
              deps=(lay.dataset, lay.variants, lay.reference_outputs),
              outs=(lay.footprints,)),
        Stage("report", params=("quantization.variants", "report"),
              deps=(lay.dataset, lay.variants, *(lay.history(m) for m in KERAS_MODELS),
                    lay.evaluations, lay.benchmarks, lay.footprints,
                    *(lay.keras_metrics(m) for m in KERAS_MODELS)),
              uncached=tuple(lay.report(f) for f in REPORT_FILES),
              metrics=(lay.report(METRICS_FILE),)),
        Stage("track", params=(),
              deps=(Path("params.yaml"), *(lay.report(f) for f in REPORT_FILES),
                    lay.report(METRICS_FILE), lay.variants, lay.keras("float"),
                    *(lay.history(m) for m in KERAS_MODELS), lay.keras_metrics("qat"),
                    lay.evaluations, lay.benchmarks, lay.footprints),
              uncached=(lay.mlflow_run,)),
    ]
    by_name = {s.name: dataclasses.replace(s, per_variant=s.name in PER_VARIANT) for s in specs}
    assert set(by_name) == set(ORDER), sorted(set(by_name) ^ set(ORDER))
    return [by_name[name] for name in ORDER]


# --- import closure ---------------------------------------------------------------------------

def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of a project module (`pipeline.x.y`), or None if it is not one."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(path: Path, module: str | None) -> set[str]:
    """Project modules a file imports, anywhere in it (function-level imports included)."""
    found: set[str] = set()
    package = module.rpartition(".")[0] if module and path.name != "__init__.py" else module
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parts = (package or "").split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(p for p in [*parts, base] if p)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if module_file(m) is not None}


def _with_parents(module: str) -> list[str]:
    """`a.b.c` -> `a`, `a.b`, `a.b.c`: importing a module runs its packages' `__init__`."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def closure(script: Path, root: Path = ROOT) -> list[Path]:
    """Every project file that running `script` can import (its own file first), plus the
    data files those modules read (`DATA_FILES`), relative to `root`."""
    seen: set[str] = set()
    todo = sorted(_imported(script, None))
    while todo:
        module = todo.pop()
        for m in _with_parents(module):
            if m in seen:
                continue
            seen.add(m)
            path = module_file(m, root)
            if path is not None:
                todo.extend(sorted(_imported(path, m) - seen))
    files = sorted(f.relative_to(root) for m in seen if (f := module_file(m, root)))
    data = sorted(Path(d) for f in files for d in DATA_FILES.get(f.as_posix(), ()))
    return [script.relative_to(root), *files, *data]


# --- dvc.yaml -----------------------------------------------------------------------------------

HEADER = """\
# GENERATED by `python -m pipeline.dvcfile` (make params) from pipeline/dvcfile.py and
# pipeline/layout.py; edit those, not this file. Each stage depends on its script's import
# closure within the project, so a change to a module reruns exactly the stages that run it.
# Parameters come from params.yaml (composed from conf/); variants: quantization.variants.
"""

_PLOT = Layout(Path(".")).plot
PLOTS: list[Any] = [
    {"accuracy_vs_size": {"template": "scatter", "x": "size_bytes",
                          "y": {_PLOT(VARIANTS_CSV).as_posix(): "accuracy"},
                          "title": "Accuracy against size (bytes)"}},
    {"accuracy_vs_latency": {"template": "scatter", "x": "latency_ms_p50",
                             "y": {_PLOT(VARIANTS_CSV).as_posix(): "accuracy"},
                             "title": "Accuracy against p50 latency (ms)"}},
    {"training_curves": {"template": "linear", "x": "epoch",
                         "y": {_PLOT(TRAINING_CSV).as_posix(): ["val_accuracy", "accuracy"]},
                         "title": "Training curves (float and QAT)"}},
    *(_PLOT(png).as_posix() for png in (SIZE_PNG, LATENCY_PNG, SIZE_BARS_PNG, TRAINING_PNG)),
]


def _paths(paths: Iterable[Path]) -> list[str]:
    return [p.as_posix() for p in paths]


def stage_entry(stage: Stage, root: Path = ROOT) -> dict[str, Any]:
    """The `dvc.yaml` entry of one stage."""
    body: dict[str, Any] = {
        "cmd": f"python {stage.script}" + (f" {KEY}" if stage.per_variant else ""),
        "deps": _paths(closure(root / stage.script, root)) + _paths(stage.deps),
    }
    if stage.params:
        body["params"] = list(stage.params)
    outs: list[Any] = _paths(stage.outs)
    outs += [{p: {"cache": False}} for p in _paths(stage.uncached)]
    if outs:
        body["outs"] = outs
    if stage.metrics:
        body["metrics"] = [{p: {"cache": False}} for p in _paths(stage.metrics)]
    if stage.per_variant:
        return {"foreach": "${quantization.variants}", "do": body}
    return body


def render(root: Path = ROOT) -> str:
    """The text of `dvc.yaml`."""
    doc = {"stages": {s.name: stage_entry(s, root) for s in stages()}, "plots": PLOTS}
    return HEADER + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only check that dvc.yaml is up to date (exit 1 if not)")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if DVC_FILE.read_text(encoding="utf-8") != text:
            sys.exit("dvc.yaml is out of date with the code: run `make params`")
        print("dvc.yaml is up to date")
        return
    write_text(DVC_FILE, text)
    print(f"wrote {DVC_FILE}")


if __name__ == "__main__":
    main()
