"""The structure carries the rules: `dvc.yaml` is what the code says (paths from the layout,
every stage's code among its deps), and the stages that run `.tflite` models never import
TensorFlow."""

from __future__ import annotations


import dataclasses
import modulefinder
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from pipeline import data, dvcfile
from pipeline.config import Config
from pipeline.params import render_params
from pipeline.io import write_json
from pipeline.layout import Layout

DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
# TensorFlow-free by design: these folders, and the modules at the top of the package.
TF_FREE_FOLDERS = ("variants", "measure", "report", "ship", "tracking")


def stage_deps(name: str) -> list[str]:
    entry = DVC_YAML["stages"][name]
    return (entry.get("do") or entry)["deps"]


def test_dvc_yaml_is_generated_from_the_code() -> None:
    """The stage paths are written once (pipeline.layout) and dvc.yaml is rendered from them:
    a hand edit or a forgotten `make params` fails here."""
    assert (ROOT / "dvc.yaml").read_text() == dvcfile.render(), \
        "dvc.yaml is out of date: run `make params`"
    assert list(DVC_YAML["stages"]) == [s.name for s in dvcfile.stages()]


def test_the_rerun_table_and_the_readme_sentence_are_the_dvc_yaml_ones() -> None:
    """docs/configuration.md's table is made from dvc.yaml's params (a forgotten `make
    params` fails here), and the README's example names exactly the stages that a new
    budget in conf/ reruns directly (two keys change: the report's and the search's own)."""
    from pipeline.params import compose
    from pipeline.reads import leaves

    docs = ROOT / "docs" / "configuration.md"
    assert docs.read_text() == dvcfile.docs_text(docs.read_text(), compose()), \
        "the rerun table of docs/configuration.md is out of date: run `make params`"
    default, tight = compose(), compose(["report.max_accuracy_drop=0.001"])
    changed = [k for k, v in leaves(tight).items() if leaves(default).get(k) != v]
    assert set(changed) == {"report.max_accuracy_drop", "quantization.variants.auto.budget"}
    table = dvcfile.reruns(tight)
    direct = {name for key in changed for name in table[key]}
    readme = (ROOT / "README.md").read_text()
    sentence = readme[readme.index("report.max_accuracy_drop=0.001"):]
    sentence = sentence[:sentence.index(")")]
    named = set(re.findall(r"`([a-z_]+(?:@[a-z0-9_]+)?)`", sentence))
    assert named == direct, (sorted(named), sorted(direct))


def test_interpolated_keys_are_params() -> None:
    """A key dvc.yaml interpolates into a stage's paths (`${report.reference}`, a variant's
    `source`) is among that stage's params too, so the rerun table needs nothing else."""
    for stage in dvcfile.stages():
        for path in stage.deps:
            for key in re.findall(r"\$\{([^}]+)\}", path.as_posix()):
                if key == "key":  # the variant's own name: the stage's identity
                    continue
                key = key.replace("item.", f"quantization.variants.{dvcfile.KEY}.")
                assert any(key == p or key.startswith(p + ".") for p in stage.params), \
                    (stage.name, key)


def finder_closure(script: Path) -> set[str]:
    """The project files `script` can import, found by the standard library's bytecode
    scanner (independent of pipeline.dvcfile's AST walk)."""
    finder = modulefinder.ModuleFinder(path=[str(ROOT)])
    finder.run_script(str(script))
    files = {Path(m.__file__).resolve() for m in finder.modules.values() if m.__file__}
    return {f.relative_to(ROOT).as_posix() for f in files if ROOT / "pipeline" in f.parents}


@pytest.mark.parametrize("stage", [s.name for s in dvcfile.stages()])
def test_every_module_a_stage_can_import_is_among_its_deps(stage: str) -> None:
    script = ROOT / "stages" / f"{stage}.py"
    reached = finder_closure(script)
    assert f"pipeline/steps/{stage}.py" in reached
    missing = reached - set(stage_deps(stage))
    assert not missing, f"{stage} imports {sorted(missing)} but does not depend on them"
    # ... and nothing more: deps beyond the closure would rerun the stage for no reason.
    # (a `.py` file read as data, not imported, is declared in DATA_FILES: the logged models'
    # code that MLflow copies.)
    read = {d for files in dvcfile.DATA_FILES.values() for d in files}
    code_deps = {d for d in stage_deps(stage)
                 if d.startswith("pipeline/") and d.endswith(".py") and d not in read}
    assert code_deps == reached


def test_every_file_a_module_reads_is_a_dep() -> None:
    """Non-Python files in the package (templates) are declared, so the stage reading them
    reruns when they change."""
    data_files = [p for p in (ROOT / "pipeline").rglob("*")
                  if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
    declared = [ROOT / d for files in dvcfile.DATA_FILES.values() for d in files]
    assert data_files, "the report templates should be here"
    for f in data_files:
        assert any(f == d or d in f.parents for d in declared), f


@pytest.mark.parametrize("stage", [s.name for s in dvcfile.stages() if not s.tensorflow])
def test_tensorflow_free_stages_reach_no_build_module(stage: str) -> None:
    reached = finder_closure(ROOT / "stages" / f"{stage}.py")
    assert not [m for m in reached if m.startswith("pipeline/produce/")], reached


def test_tensorflow_free_folders_never_import_tensorflow() -> None:
    """Every module of the TF-free folders and the top of the package, imported in a fresh
    process: none pulls TensorFlow in."""
    modules = [f"pipeline.{p.stem}" for p in (ROOT / "pipeline").glob("*.py")
               if p.stem not in ("__main__",)]
    for folder in TF_FREE_FOLDERS:
        modules += [f"pipeline.{folder}.{p.stem}".removesuffix(".__init__")
                    for p in (ROOT / "pipeline" / folder).glob("*.py")]
    modules += [f"pipeline.steps.{s.name}" for s in dvcfile.stages() if not s.tensorflow]
    code = ("import importlib, sys\n"
            f"for m in {sorted(modules)!r}:\n"
            "    importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'tf_keras', 'keras', 'tensorflow_model_optimization'))\n"
            "assert not bad, bad[:5]\n"
            "print(len([m for m in sys.modules if m.startswith('pipeline')]))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= len(modules)


@pytest.mark.slow
def test_tensorflow_free_stages_run_without_tensorflow(tmp_path: Path, tiny_cfg: Config,
                                                       tiny_raw: dict, variant_dirs: Path,
                                                       small_dataset: data.Dataset) -> None:
    """The real stage scripts of reference, evaluate, benchmark, footprint and report, run as
    `dvc repro` runs them, on two variants: TensorFlow is never loaded (checked at the
    process's exit)."""
    lay = Layout(tmp_path)
    names = ["float32", "int8"]
    raw = {**tiny_raw, "quantization": {**tiny_raw["quantization"], "variants": {
        n: tiny_raw["quantization"]["variants"][n] for n in names}}}
    params = tmp_path / "params.yaml"
    params.write_text(render_params(raw))
    data.save(small_dataset, lay.dataset)
    for n in names:
        shutil.copytree(variant_dirs / n, lay.variant(n))
    for model in ("float", "qat"):
        write_json(lay.history(model), {})
        write_json(lay.keras_metrics(model), {"test_accuracy": 0.5})
    guard = ("import atexit, os, runpy, sys\n"
             "def check():\n"
             "    if any(m.split('.')[0] in ('tensorflow', 'tf_keras') for m in sys.modules):\n"
             "        sys.stderr.write('TENSORFLOW WAS IMPORTED\\n'); os._exit(97)\n"
             "atexit.register(check)\n"
             "script = sys.argv[1]; sys.argv = sys.argv[1:]\n"
             "runpy.run_path(script, run_name='__main__')\n")
    commands = [["reference_outputs"], *(["evaluate", n] for n in names),
                *(["benchmark", n] for n in names), ["footprint"], ["report"]]
    for stage, *args in commands:
        proc = subprocess.run([sys.executable, "-c", guard, str(ROOT / "stages" / f"{stage}.py"),
                               *args, "--root", str(tmp_path), "--params", str(params)],
                              cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, (stage, proc.stderr[-2000:])
    assert lay.report("report.html").is_file()


def test_layout_paths_are_the_ones_dvc_tracks() -> None:
    """Every output the layout names for a stage appears in that stage's dvc.yaml entry."""
    lay = Layout(Path("."))
    outs = {}
    for name, entry in DVC_YAML["stages"].items():
        body = entry.get("do") or entry
        outs[name] = [next(iter(o)) if isinstance(o, dict) else o
                      for o in body.get("outs", []) + body.get("metrics", [])]
    assert lay.dataset.as_posix() in outs["prepare"]
    assert lay.variant("${key}").as_posix() in outs["quantize"]
    assert lay.evaluation("${key}").as_posix() in outs["evaluate"]
    assert lay.benchmark("${key}").as_posix() in outs["benchmark"]
    assert lay.report("recommendation.json").as_posix() in outs["report"]
    assert lay.mlflow_run.as_posix() in outs["track"]
    assert [f.name for f in dataclasses.fields(Layout)] == ["root"]


# The package's layers, bottom up: a module imports from its own layer or the ones below,
# never from one above. Top-level modules are the core; the folders are named.
LAYERS = (
    ("core", ("__init__", "io", "signals", "quiet", "schema", "reads", "closure", "metrics",
              "labels", "stats", "layout", "artifacts", "console", "tfcompat", "plots", "data",
              "sources", "variants", "config", "params")),
    ("measure", ("measure",)),  # LiteRT side: runs .tflite models, no TensorFlow
    ("produce", ("produce",)),  # TensorFlow side: trains, converts, quantizes
    ("report", ("report",)),
    ("ship", ("ship",)),  # device packages: reads the run's outputs, never the report's code
    ("tracking", ("tracking",)),  # MLflow
    ("steps", ("steps",)),
    ("entry", ("cli", "worker", "cluster", "dvcfile", "__main__")),
)


def _layer(module: str) -> int:
    """The layer of `pipeline.<part>...`."""
    part = module.split(".")[1] if "." in module else module
    return next(i for i, (_, parts) in enumerate(LAYERS) if part in parts)


def test_no_module_imports_one_above_it() -> None:
    """Every module of the package (function-level imports included) imports only from its own
    layer or below; a step never imports another stage's step; nothing imports the developer
    tools (`tools/`)."""
    from pipeline.steps import ORDER

    files = [p for p in (ROOT / "pipeline").rglob("*.py") if "__pycache__" not in p.parts]
    assert len(files) > 60
    upward, sideways = [], []
    for path in files:
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        # dvcfile's own walk: every project module the file imports, function-level ones and
        # relative ones included (the package itself is every layer's parent, not a layer).
        for target in dvcfile._imported(path, module) - {"pipeline"}:
            if _layer(target) > _layer(module):
                upward.append(f"{module} -> {target}")
            stage = target.split(".")[2] if target.startswith("pipeline.steps.") else None
            if module.startswith("pipeline.steps.") and stage in ORDER and \
                    module != "pipeline.steps.all":
                sideways.append(f"{module} -> {target}")
        assert "import tools" not in path.read_text() and "from tools" not in path.read_text()
    assert not upward, upward
    assert not sideways, sideways
    assert {name for name, _ in LAYERS} == {"core", "measure", "produce", "report", "ship",
                                            "tracking", "steps", "entry"}
