"""`dvc.yaml`, generated: the stages with their outputs from `pipeline.layout`, and the code
each stage runs as its dependencies, computed from the stage script's import closure within
the project. So a change to any module reruns exactly the stages that import it, and
`dvc repro` saying "up to date" is true.

Each stage's `params` are the config keys its step reads (`pipeline.reads` records them);
`docs/configuration.md`'s table of what each key reruns is made from them here, and
`dvc.lock` loses the entries of stages that no longer exist.

    python -m pipeline.dvcfile           # (part of make params)
    python -m pipeline.dvcfile --check   # exit 1 if dvc.yaml or the table is out of date
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.closure import DATA_FILES, PACKAGE, ROOT, _imported, closure  # noqa: F401
from pipeline.io import write_text
from pipeline.layout import (KERAS_MODELS, LATENCY_PNG, METRICS_FILE, RECOMMENDATION,
                             REPORT_FILES, SIZE_BARS_PNG, SIZE_PNG, SUMMARY_JSON, TRAINING_CSV,
                             TRAINING_PNG, VARIANTS_CSV, Layout)
from pipeline.steps import ORDER, PER_VARIANT

DVC_FILE = ROOT / "dvc.yaml"
KEY, SOURCE, REFERENCE = "${key}", "${item.source}", "${report.reference}"  # DVC templating


@dataclasses.dataclass(frozen=True)
class Stage:
    """One DVC stage: `python stages/<name>.py [${key}]`, run per variant if `per_variant`.

    Attributes:
        deps: Data dependencies (paths); the code dependencies are computed.
        outs: Cached outputs. `uncached`: outputs kept in git (the report). `metrics`: DVC
            metrics files (not cached).
        tensorflow: Whether the stage may import TensorFlow (a test holds the others to it).
        params: The config keys its step reads (`pipeline.reads` records them, and every
            stage fails in the tests on a key read and not listed here).
        widened: Params listed whole although the step reads only some keys under them,
            each with the reason (`tests/test_e2e.py` accepts a rerun beyond what the step
            read only for a key under one of these, or one another variant's instance of
            the stage reads).
    """

    name: str
    params: tuple[str, ...]
    widened: tuple[tuple[str, str], ...] = ()
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
    kinds = ("a variant's keys depend on its kind and on what conf/ sets, and a stage can "
             "only list keys every configuration has")
    specs = [
        Stage("prepare", params=("seed", "data"), outs=(lay.dataset,), tensorflow=True,
              widened=(("data", "which keys a source reads depends on data.name (data.path "
                                "for files, the fractions where the source has no test "
                                "split of its own)"),)),
        Stage("intake", params=("model",), deps=(lay.dataset,), outs=(lay.intake,),
              tensorflow=True,
              widened=(("model", "which keys it reads depends on model.arch (a Keras model "
                                 "reads only that)"),)),
        Stage("train", params=("seed", "model", "train"), deps=(lay.dataset, lay.intake),
              outs=(lay.keras("float"), lay.history("float")),
              metrics=(lay.keras_metrics("float"),), tensorflow=True,
              widened=(("model", "which keys a model reads depends on model.arch"),)),
        Stage("qat", params=("seed", "qat", "evaluate.labels"),
              deps=(lay.dataset, lay.keras("float")),
              outs=(lay.keras("qat"), lay.history("qat")), metrics=(lay.keras_metrics("qat"),),
              tensorflow=True),
        Stage("layer_errors", params=("seed", "quantization.calibration_samples",
                                      "quantization.variants"),
              deps=(lay.dataset, lay.keras("float")), outs=(lay.layer_errors,),
              tensorflow=True,
              widened=(("quantization.variants", "which per-layer tables it computes "
                        "depends on the fields of the full-integer variants; " + kinds),)),
        Stage("quantize", tensorflow=True,
              params=("seed", "quantization.calibration_samples",
                      "quantization.comparison_samples", f"quantization.variants.{KEY}"),
              deps=(lay.dataset, lay.keras(SOURCE), lay.layer_errors),
              outs=(lay.variant(KEY),), widened=((f"quantization.variants.{KEY}", kinds),)),
        Stage("reference_outputs", params=("report.reference", "evaluate.batch_size"),
              deps=(lay.dataset, lay.variant(REFERENCE)), outs=(lay.reference_outputs,)),
        Stage("evaluate", params=("evaluate.batch_size", "evaluate.top_k",
                                  "evaluate.kernel_paths", "evaluate.kernel_path_tolerance",
                                  "evaluate.labels"),
              deps=(lay.dataset, lay.variant(KEY), lay.reference_outputs),
              outs=(lay.evaluation(KEY),)),
        Stage("benchmark", params=("benchmark", "report.reference"),
              deps=(lay.dataset, lay.variant(KEY), lay.variant(REFERENCE)),
              outs=(lay.benchmark(KEY), lay.profile(KEY))),
        Stage("footprint", params=("seed", "footprint", "evaluate.kernel_path_tolerance",
                                   "evaluate.labels"),
              deps=(lay.dataset, lay.variants, lay.reference_outputs),
              outs=(lay.footprints,)),
        Stage("calibration", tensorflow=True,
              params=("seed", "calibration.variants", "calibration.sizes",
                      "calibration.whole_split", "calibration.draws", "calibration.selections",
                      "calibration.misscale", "quantization.calibration_samples",
                      "quantization.comparison_samples", "quantization.variants",
                      "evaluate.labels"),
              widened=(("quantization.variants", "it makes the studied variants by their "
                        "fields; " + kinds),),
              deps=(lay.dataset, lay.keras("float")), outs=(lay.calibration,)),
        Stage("report", params=("quantization.variants", "report", "evaluate.labels"),
              widened=(("quantization.variants", "it shows each variant's description and "
                        "kind; " + kinds),),
              deps=(lay.dataset, lay.variants, *(lay.history(m) for m in KERAS_MODELS),
                    lay.evaluations, lay.benchmarks, lay.footprints, lay.calibration,
                    *(lay.keras_metrics(m) for m in KERAS_MODELS)),
              uncached=tuple(lay.report(f) for f in REPORT_FILES),
              metrics=(lay.report(METRICS_FILE),)),
        Stage("export", params=("deploy", "report.target", "evaluate.labels"),
              deps=(lay.dataset, lay.variants, lay.footprints, lay.reference_outputs,
                    lay.report(RECOMMENDATION), lay.report(SUMMARY_JSON)),
              outs=(lay.packages,)),
        Stage("track", params=(),
              deps=(Path("params.yaml"), *(lay.report(f) for f in REPORT_FILES),
                    lay.report(METRICS_FILE), lay.variants, lay.keras("float"),
                    *(lay.history(m) for m in KERAS_MODELS), lay.keras_metrics("qat"),
                    lay.evaluations, lay.benchmarks, lay.footprints, lay.packages,
                    lay.calibration),
              uncached=(lay.mlflow_run,)),
    ]
    by_name = {s.name: dataclasses.replace(s, per_variant=s.name in PER_VARIANT) for s in specs}
    assert set(by_name) == set(ORDER), sorted(set(by_name) ^ set(ORDER))
    return [by_name[name] for name in ORDER]


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


# --- what reruns when a key changes -------------------------------------------------------------

PARAMS_FILE = "params.yaml"  # a stage depending on the file reruns on any key (track)
LOCK_FILE = ROOT / "dvc.lock"
DOCS_FILE = ROOT / "docs" / "configuration.md"
TABLE_START, TABLE_END = "<!-- reruns: start -->", "<!-- reruns: end -->"
METRICS_DOCS = ROOT / "docs" / "metrics.md"
METRICS_START, METRICS_END = "<!-- metrics: start -->", "<!-- metrics: end -->"


def instances(variants: Iterable[str]) -> list[tuple[Stage, str | None, str]]:
    """Every stage DVC runs for these variants: `(stage, variant or None, its name)`, the
    per-variant ones as `name@variant`, in order."""
    variants = list(variants)
    return [(s, v, f"{s.name}@{v}" if v else s.name) for s in stages()
            for v in (variants if s.per_variant else [None])]


def instance_params(stage: Stage, variant: str | None) -> list[str]:
    """A stage's params with `${key}` set to its variant."""
    return [p.replace(KEY, variant or KEY) for p in stage.params]


def reruns(raw: Mapping[str, Any]) -> dict[str, list[str]]:
    """For every leaf key of a config (as in params.yaml), the stages whose params list it
    (or a section holding it) or that depend on params.yaml itself: what `dvc status` names
    when that one key changes. Interpolated deps (`${report.reference}`,
    `${item.source}`) need nothing more: their keys are in the same stages' params
    (`test_interpolated_keys_are_params`)."""
    from pipeline.reads import covers, leaves

    found = {key: [] for key in leaves(raw)}
    for stage, variant, name in instances(raw["quantization"]["variants"]):
        whole = PARAMS_FILE in _paths(stage.deps)
        params = instance_params(stage, variant)
        for key, names in found.items():
            if whole or any(covers(p, key) for p in params):
                names.append(name)
    return found


def prune_lock(path: Path = LOCK_FILE, variants: Iterable[str] = ()) -> list[str]:
    """Remove from `dvc.lock` the entries of stages `dvc.yaml` no longer defines (DVC keeps
    them: a renamed or removed stage's entry stayed forever). Returns the names removed."""
    if not path.is_file():
        return []
    lock = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    defined = {name for _, _, name in instances(variants)}
    stale = [n for n in lock.get("stages", {}) if n not in defined]
    if stale:
        from dvc.utils.serialize import modify_yaml  # DVC's own writer: its format stays

        with modify_yaml(path) as doc:
            for name in stale:
                del doc["stages"][name]
    return stale


def mappings_name(prefix: str) -> str:
    """The placeholder for a name in a mapping of the config (`<variant>`, `<npu>`)."""
    return {"quantization.variants": "<variant>", "footprint.npu": "<npu>"}[prefix]


def _generic(key: str, variants: Iterable[str], mappings: Mapping[str, Iterable[str]]) -> str:
    """A key with its variant or NPU target name replaced by a placeholder."""
    for prefix, names in mappings.items():
        for n in names:
            if key.startswith(f"{prefix}.{n}.") or key == f"{prefix}.{n}":
                return key.replace(f"{prefix}.{n}", f"{prefix}.{mappings_name(prefix)}", 1)
    return key


def rerun_table(raw: Mapping[str, Any]) -> str:
    """The Markdown table `docs/configuration.md` shows: each key of the default config, the
    stages a change of it reruns directly (a variant's keys collapsed to `<variants>`), and
    nothing else; what then reruns is what depends on their outputs, when those change."""
    variants = list(raw["quantization"]["variants"])
    mappings = {"quantization.variants": variants,
                "footprint.npu": list(raw.get("footprint", {}).get("npu") or {})}
    rows: dict[str, set[str]] = {}
    order: list[str] = []
    for key, names in reruns(raw).items():
        generic = _generic(key, variants, mappings)
        collapsed = set()
        for n in names:
            stage, _, v = n.partition("@")
            if v and f"quantization.variants.{v}" in key:
                collapsed.add(f"{stage}@<variant>")  # its own variant's stage
            else:
                collapsed.add(f"{stage}@*" if v else stage)
        if generic not in rows:
            rows[generic], order = set(), [*order, generic]
        rows[generic] |= collapsed
    ranked = {s.name: i for i, s in enumerate(stages())}

    def sort(name: str) -> tuple[int, str]:
        return ranked[name.partition("@")[0]], name

    lines = ["| key | reruns |", "|---|---|"]
    for key in order:
        names = sorted(rows[key], key=sort)
        lines.append(f"| `{key}` | {', '.join(f'`{n}`' for n in names)} |")
    return "\n".join(lines) + "\n"


def _between(current: str, start_mark: str, end_mark: str, table: str) -> str:
    start, end = current.index(start_mark), current.index(end_mark)
    return current[:start + len(start_mark)] + "\n" + table + current[end:]


def docs_text(current: str, raw: Mapping[str, Any]) -> str:
    """`docs/configuration.md` with its rerun table (between the markers) made anew."""
    return _between(current, TABLE_START, TABLE_END, rerun_table(raw))


def metrics_docs_text(current: str) -> str:
    """`docs/metrics.md` with its table of the declared metrics (`pipeline.metrics`) anew."""
    from pipeline import metrics

    return _between(current, METRICS_START, METRICS_END, metrics.docs_table())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only check that dvc.yaml and the docs' rerun table are up to "
                             "date (exit 1 if not)")
    args = parser.parse_args(argv)
    from pipeline.params import compose

    text = render()
    docs = {DOCS_FILE: docs_text(DOCS_FILE.read_text(encoding="utf-8"), compose()),
            METRICS_DOCS: metrics_docs_text(METRICS_DOCS.read_text(encoding="utf-8"))}
    if args.check:
        if DVC_FILE.read_text(encoding="utf-8") != text:
            sys.exit("dvc.yaml is out of date with the code: run `make params`")
        for path, made in docs.items():
            if path.read_text(encoding="utf-8") != made:
                sys.exit(f"the generated table of {path} is out of date: run `make params`")
        print("dvc.yaml and the generated tables are up to date")
        return
    write_text(DVC_FILE, text)
    for path, made in docs.items():
        write_text(path, made)
    params = ROOT / PARAMS_FILE
    if params.is_file():
        variants = yaml.safe_load(params.read_text(encoding="utf-8"))["quantization"]["variants"]
        stale = prune_lock(LOCK_FILE, variants)
        if stale:
            print(f"removed from dvc.lock: {len(stale)} stages dvc.yaml no longer defines")
    print(f"wrote {DVC_FILE} and the tables of {DOCS_FILE} and {METRICS_DOCS}")


if __name__ == "__main__":
    main()
