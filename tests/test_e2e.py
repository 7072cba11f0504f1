"""End to end: a real `dvc repro` in a temporary copy of the project, on a tiny config, with
its own MLflow store. Slow (about two minutes); CI runs it too.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import socket
import subprocess
import sys
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT, TINY_OVERRIDES
from pipeline import config as config_mod
from pipeline import params as params_mod
from pipeline import dvcfile, reads
from test_structure import finder_closure
from pipeline.io import read_json
from pipeline import metrics as declared

# One project copy for every end-to-end test and `make bench` (`tools/project.py`); the tests
# that import `project_copy` and `project_env` from here get the same functions.
from tools.project import project_copy, project_env  # noqa: F401 (imported from here too)


def run(cmd: list[str], cwd: Path, tracking_uri: str | None = None,
        stdout_only: bool = False, **env: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env={**project_env(cwd, tracking_uri), **env},
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout if stdout_only else proc.stdout + proc.stderr


def runs(project: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tflite-quantization-lab")
    return client.search_runs([exp.experiment_id], max_results=1000)


@pytest.fixture()
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real `mlflow server` on a free loopback port, SQLite backend, artifact directory."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    log = (server_dir / "server.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{server_dir / 'mlflow.db'}",
         "--artifacts-destination", str(server_dir / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (server_dir / "server.log").read_text()
            assert time.monotonic() < deadline, "mlflow server did not start in 120 s"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def http_json(url: str, path: str, body: dict | None = None) -> dict:
    """One call of MLflow's REST API (GET, or POST with a JSON body)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}{path}", data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _set(raw: dict, key: str, value: Any) -> dict:
    out = copy.deepcopy(raw)
    node = out
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return out


def _candidates(value: Any) -> list[Any]:
    """Other values of a leaf, the likeliest valid first."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value * 2, max(value - 1, 0)]
    if isinstance(value, float):
        return [value / 2, value * 2, value + 0.5, 1.0]
    if value is None:
        return [10, 1, 0.5, "x"]
    if isinstance(value, str):
        return [value + "_other"]
    if isinstance(value, list):
        return [value[:-1], value + value[:1], [*value, "x"]] if value else [[1], ["x"]]
    return [value, "x"]  # an empty mapping


VALID = re.compile(r"valid: (.+)$")


def another_value(raw: dict, key: str) -> tuple[Any, bool]:
    """A different value for `key` that the lab accepts (`parse_config`), and whether one
    was found (else the first different value: `dvc status` does not validate)."""
    current = reads.leaves(raw)[key]
    tried = [v for v in _candidates(current) if v != current]
    for value in tried:
        try:
            config_mod.parse_config(_set(raw, key, value))
            return value, True
        except ValueError as exc:  # a closed set of values: the message lists them
            found = VALID.search(str(exc).splitlines()[0])
            for option in (found.group(1).split(", ") if found else []):
                if isinstance(current, list):
                    option = [option] if [option] != current else None
                if option is not None and option != current and option != str(current):
                    try:
                        config_mod.parse_config(_set(raw, key, option))
                        return option, True
                    except ValueError:
                        continue
    return tried[0], False


def params_status(project: Path, keys_in_deps: set[str], key: str, dvc: list[str],
                  stages: list) -> set[str]:
    """What `dvc status` names after a change of `key` (already written to params.yaml):
    DVC's own params check of each stage, or, for a key that dvc.yaml interpolates into
    paths, a whole `dvc status` (it reloads the stages)."""
    from dvc.dependency.param import ParamsDependency

    if key in keys_in_deps:
        return set(json.loads(run(dvc + ["status", "--json"], project, stdout_only=True)))
    return {s.name for s in stages  # params, and params.yaml as a file (track)
            if any((isinstance(d, ParamsDependency) or d.def_path == "params.yaml")
                   and d.status() for d in s.deps)}


def check_every_key(project: Path, raw: dict, read_dir: Path, dvc: list[str]) -> None:
    """Change every leaf of params.yaml, one at a time: `dvc status` must name exactly the
    stages whose step read it (as `pipeline.reads` recorded in `read_dir` during the run),
    and beyond them only stages a reason allows (`Stage.widened`, or another variant's
    instance of the same stage reads it: DVC lists one set of params per stage)."""
    from dvc.repo import Repo

    recorded = {f.stem: json.loads(f.read_text()) for f in read_dir.glob("*.json")}
    by_name = {name: (stage, variant)
               for stage, variant, name in dvcfile.instances(raw["quantization"]["variants"])}
    assert set(recorded) == set(by_name)  # every stage ran and recorded what it read
    assert not any(r["missing"] for r in recorded.values()), \
        {n: r["missing"] for n, r in recorded.items() if r["missing"]}
    table = dvcfile.reruns(raw)
    interpolated = {k for k in table if "${" + k + "}" in (project / "dvc.yaml").read_text()}
    params_file = project / "params.yaml"
    original = params_file.read_text()
    repo = Repo(str(project))
    stage_list = list(repo.index.stages)
    problems, unread, invalid, widened = [], [], [], {}
    try:
        for key in table:
            value, valid = another_value(raw, key)
            if not valid:
                invalid.append(key)
            params_file.write_text(params_mod.render_params(_set(raw, key, value)))
            listed = params_status(project, interpolated, key, dvc, stage_list)
            if listed != set(table[key]):
                problems.append(f"{key}: dvc status {sorted(listed)}, the table "
                                f"{sorted(table[key])}")
            reading = {n for n, r in recorded.items()
                       if n == "track" or any(reads.covers(k, key) for k in r["keys"])}
            if missing := reading - listed:
                problems.append(f"{key}: read by {sorted(missing)}, not rerun")
            for name in sorted(listed - reading):
                stage, variant = by_name[name]
                same = any(by_name[n][0].name == stage.name for n in reading)
                reason = next((why for p, why in stage.widened
                               if reads.covers(p.replace(dvcfile.KEY, variant or ""), key)),
                              None)
                if same:
                    widened.setdefault("another variant's instance reads it", set()).add(name)
                elif reason:
                    widened.setdefault(reason, set()).add(f"{name}: {key}")
                else:
                    problems.append(f"{key}: reruns {name}, whose step does not read it")
            if reading == {"track"}:
                unread.append(key)
    finally:
        params_file.write_text(original)
        repo.close()
    # Every listed param is read by some instance of its stage.
    for stage in dvcfile.stages():
        names = [n for n, (s, _) in by_name.items() if s.name == stage.name]
        for param in stage.params:
            if not any(reads.covers(param.replace(dvcfile.KEY, by_name[n][1] or ""), k)
                       or reads.covers(k, param.replace(dvcfile.KEY, by_name[n][1] or ""))
                       for n in names for k in recorded[n]["keys"]):
                problems.append(f"{stage.name} lists {param}, which its step never read")
    print(f"{len(table)} keys changed; no valid other value for {invalid}; read by no stage "
          f"but track (logged only): {unread}")
    for reason, names in widened.items():
        print(f"wider than read ({reason}): {len(names)}")
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_dvc_repro_end_to_end(tmp_path: Path, mlflow_server: str) -> None:
    project = project_copy(tmp_path / "lab")
    raw = params_mod.compose(TINY_OVERRIDES)
    # A new variant is only config: it must flow through every stage, MLflow and the report.
    raw["quantization"]["variants"]["int8_per_tensor"] = {
        "description": "int8, one scale per weight tensor", "source": "float",
        "optimizations": ["DEFAULT"], "representative_data": True, "per_channel": False}
    # A mixed per-layer recipe of the LiteRT Quantizer, by regex on the layer names: only
    # config, too. The dense layers int8 static, the rest int4 weight-only.
    raw["quantization"]["variants"]["my_mixed"] = {
        "description": "dense layers int8, the rest int4", "source": "float",
        "backend": "litert_quantizer", "recipe": "weight_only_wi4_afp32",
        "rules": [{"regex": "/dense", "op": "FULLY_CONNECTED", "mode": "static", "bits": 8}]}
    # A variant the converter refuses (integer-only ops cannot give int16 I/O): it is
    # recorded as failed and the rest of the pipeline completes.
    raw["quantization"]["variants"]["broken"] = {
        "description": "refused by the converter", "source": "float",
        "optimizations": ["DEFAULT"], "representative_data": True,
        "supported_ops": ["TFLITE_BUILTINS_INT8"], "inference_input_type": "int16",
        "inference_output_type": "int16"}
    (project / "params.yaml").write_text(params_mod.render_params(raw))
    variants = [v for v in raw["quantization"]["variants"] if v != "broken"]
    dvc = [str(Path(sys.executable).parent / "dvc")]

    read_dir = tmp_path / "reads"  # what each stage's step read (pipeline.reads)
    run(dvc + ["repro"], project, **{reads.ENV_RECORD: str(read_dir)})

    for v in variants:
        assert (project / "models" / "tflite" / v / f"{v}.tflite").stat().st_size > 0
    with (project / "models" / "tflite" / "my_mixed" / "precision.csv").open() as f:
        precision = {r["layer"]: (r["asked"], r["got"]) for r in csv.DictReader(f)}
    for layer, (asked, got) in precision.items():  # asked per layer, and got as asked
        expected = "int8 static" if "/dense" in layer else "int4 weight-only"
        assert asked.startswith(expected) and got.startswith(expected), (layer, asked, got)
    assert not (project / "models" / "tflite" / "broken" / "broken.tflite").exists()
    summary = (project / "reports" / "summary.md").read_text()
    assert all(f"| `{v}` |" in summary for v in variants)
    assert "`broken` **failed**: ValueError:" in summary
    assert "## Worst-quantized layers" in summary
    shown = json.loads(run(dvc + ["metrics", "show", "--json"], project, stdout_only=True))
    metrics = next(iter(shown.values()))["data"]["reports/metrics.json"]["data"]
    assert set(metrics) == set(variants)
    assert all(set(declared.every_variant()) <= set(m) for m in metrics.values())
    # Every metric written is declared, and every declared one is written here, but those
    # written only `when` a setting asks (memory, with benchmark.memory: tests/test_measure).
    written = {k for m in metrics.values() for k in m}
    assert all(declared.declared(k) for k in written), sorted(
        k for k in written if not declared.declared(k))
    never = {m.key for m in declared.METRICS if not m.when} - {
        declared.find(k).key for k in written}
    assert not never, sorted(never)
    # The same columns for every variant, but a device tool's figures, which exist only
    # where the tool ran it (an arena of 0 would be a lie for a model TFLM cannot run).
    assert len({frozenset(k for k in m if not declared.device_metric(k))
                for m in metrics.values()}) == 1
    assert "smallest_arena_bytes" in metrics["float32"]  # TFLM runs float models ...
    assert "arena_bytes" not in metrics["dynamic_range"]  # ... not hybrid ones
    assert metrics["int8"]["ethos-u55-128.sram_bytes"] > 0  # Vela compiles integer ones
    assert not any(k.startswith("ethos-u") for k in metrics["float32"])
    assert metrics["int8"]["t2.latency_ms_p50"] > 0  # every thread count of the config
    assert (project / "evaluation" / "int8" / "confusion_matrix.png").stat().st_size > 0
    assert 0.5 < metrics["float32"]["accuracy"] <= 1.0  # three tiny epochs beat chance (0.1)
    assert metrics["float32"]["accuracy_drop"] == 0

    logged = runs(project)
    trials = [r for r in logged if "search.change" in r.data.tags]  # nested under `auto`
    # The calibration study: a run nested under the execution's, a run per point under it.
    study = read_json(project / "calibration" / "study.json")
    studied = [r for r in logged if r.data.tags.get("study") == "calibration"]
    logged = [r for r in logged
              if "search.change" not in r.data.tags and r.data.tags.get("study") is None]
    [study_run] = [r for r in studied if "variant" not in r.data.tags]
    points = {r.info.run_name.split(" · ")[0]: r for r in studied if "variant" in r.data.tags}
    assert sorted(points) == sorted(p["name"] for p in study["points"]) and len(points) == 10
    for p in study["points"]:  # the same figures as the study's file, under the study's run
        run_ = points[p["name"]]
        assert run_.data.tags["mlflow.parentRunId"] == study_run.info.run_id
        assert run_.info.status == "FINISHED" and run_.data.params["selection"] == p["selection"]
        assert run_.data.metrics["accuracy"] == pytest.approx(p["accuracy"])
    assert "## Calibration: how many samples, and which" in (
        project / "reports" / "summary.md").read_text()
    assert (project / "reports" / "plots" / "calibration.png").stat().st_size > 0
    assert len(logged) == 2 + len(variants)
    assert trials and {r.data.tags["variant"] for r in trials} == {"auto"}
    parent = next(r for r in logged if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["keras_test_accuracy"] > 0.5
    assert parent.data.params["train.epochs"] == "3"
    assert parent.data.tags["failed_variants"] == "broken"
    assert study_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.data.tags["recommended.smallest"] in variants
    children = {r.data.tags["variant"]: r for r in logged if r is not parent}
    assert {r.info.run_name for r in children.values()} == {
        f"{v} · {parent.info.run_name}" for v in children}
    broken = children.pop("broken")
    assert broken.info.status == "FAILED" and "inference_input_type" in broken.data.tags["error"]
    assert set(children) == set(variants)
    for name, child in children.items():
        assert child.info.status == "FINISHED"
        assert set(child.data.metrics) == set(metrics[name])
        assert child.data.metrics["accuracy"] == pytest.approx(metrics[name]["accuracy"])

    # Provenance on every run; the recommended variant is registered as @candidate.
    for r in logged:
        assert len(r.data.tags["git.commit"]) == 40 and r.data.tags["git.dirty"] == "true"
        assert r.data.tags["config.hash"] == parent.data.tags["config.hash"]
    assert parent.data.tags["machine.cores"] == str(os.cpu_count())
    from mlflow.tracking import MlflowClient

    registry = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    version = registry.get_model_version_by_alias("tflite-quant-lab", "candidate")
    candidate = read_json(project / "reports" / "recommendation.json")["candidate"]
    assert version.run_id == children[candidate].info.run_id
    # The version is the candidate's logged model: it loads as a predictor of float scores.
    assert version.source.startswith("models:/m-")
    assert registry.get_logged_model(version.source[len("models:/"):]).name == candidate
    # The parent says what to ship in one sentence; every run names the data it was measured on.
    assert parent.data.tags["mlflow.note.content"].startswith(f"Ship **{candidate}**, ")
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    # Every stage that ran recorded its wall time (what `make bench` sums per group).
    times = {json.loads(f.read_text())["stage"]: json.loads(f.read_text())["seconds"]
             for f in (project / ".stage-times").glob("*.json")}
    assert set(times) == set(lock["stages"]) and all(s > 0 for s in times.values())
    digest = next(o["md5"] for o in lock["stages"]["prepare"]["outs"]
                  if o["path"] == "data/prepared")
    assert {(i.dataset.name, i.dataset.digest) for i in parent.inputs.dataset_inputs} == {
        (f"digits/{s}", digest) for s in ("train", "val", "test")}
    parent_files = {a.path for a in registry.list_artifacts(parent.info.run_id)}
    assert {"report", "config", "keras_model"} <= parent_files
    report_files = {a.path for a in registry.list_artifacts(parent.info.run_id, "report")}
    # The candidate's device package (export stage), also an artifact of its run.
    index = read_json(project / "deploy" / "index.json")
    assert index["candidate"] == candidate and index["packages"][candidate]["status"] == "ok"
    package = project / "deploy" / candidate
    assert (package / "model.tflite").read_bytes() == (
        project / "models" / "tflite" / candidate / f"{candidate}.tflite").read_bytes()
    shipped = {a.path for a in registry.list_artifacts(children[candidate].info.run_id,
                                                       "deploy")}
    assert {"deploy/model.tflite", "deploy/io.json", "deploy/predict.py"} <= shipped
    # Each variant's per-operator times (benchmark stage), also an artifact of its run.
    timed = {a.path for a in registry.list_artifacts(children[candidate].info.run_id,
                                                     "benchmark")}
    assert f"benchmark/{candidate}.ops.csv" in timed
    ops_csv = (project / "benchmark" / f"{candidate}.ops.csv").read_text().splitlines()
    assert ops_csv[0].startswith("setting,index,type,kernel,ms") and len(ops_csv) > 3
    assert {"report/report.html", "report/summary.md", "report/plots"} <= report_files

    # DVC renders the plots and diffs the metrics by variant name.
    run(dvc + ["plots", "show"], project)
    assert "accuracy_vs_size" in (project / "dvc_plots" / "index.html").read_text()
    diff = json.loads(run(dvc + ["metrics", "diff", "--json"], project, stdout_only=True))
    assert "int8.accuracy" in diff["reports/metrics.json"]

    # Nothing changed: nothing runs, nothing is logged.
    out = run(dvc + ["repro"], project)
    assert "Data and pipelines are up to date" in out
    logged_with_trials = len(logged) + len(trials) + len(studied)
    assert len(runs(project)) == logged_with_trials

    # Every key of params.yaml reruns exactly the stages that read it (or says why more).
    check_every_key(project, raw, read_dir, dvc)
    assert "up to date" in run(dvc + ["status"], project)
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == {name for _, _, name in dvcfile.instances(
        raw["quantization"]["variants"])}  # nothing of a stage dvc.yaml does not define

    # A harmless edit of one library module: `dvc status` names exactly the stages that
    # import it (found by the standard library's module finder, not by pipeline.dvcfile).
    all_variants = list(raw["quantization"]["variants"])
    for module in ("pipeline/measure/benchmark.py", "pipeline/report/content.py",
                   "pipeline/produce/layer_errors.py"):
        importers = {stage.name for stage in dvcfile.stages()
                     if module in finder_closure(ROOT / stage.script)}
        expected = {f"{name}@{v}" if stage.per_variant else name
                    for stage in dvcfile.stages() if stage.name in importers
                    for name in [stage.name]
                    for v in (all_variants if stage.per_variant else [None])}
        path = project / module
        original = path.read_text()
        path.write_text(original + "\n# a harmless edit\n")
        status = json.loads(run(dvc + ["status", "--json"], project, stdout_only=True))
        path.write_text(original)
        assert importers and set(status) == expected, (module, sorted(status))
    assert "up to date" in run(dvc + ["status"], project)

    # Only the report's budget changed, now logging to a real tracking server: only report,
    # export (it reads the report's summary) and track rerun (`raw` was composed once: the search's own budget, resolved from it
    # then, stays), and one complete new set of runs reaches the server.
    raw["report"]["max_accuracy_drop"] = 0.5
    (project / "params.yaml").write_text(params_mod.render_params(raw))
    out = run(dvc + ["repro"], project, tracking_uri=mlflow_server)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"report", "export", "track"}  # the export reads the new summary
    assert len(runs(project)) == logged_with_trials  # nothing new in the local store
    # Read back over HTTP, with MLflow's REST API.
    exp = http_json(mlflow_server, "/api/2.0/mlflow/experiments/get-by-name"
                    "?experiment_name=tflite-quantization-lab")["experiment"]
    found = http_json(mlflow_server, "/api/2.0/mlflow/runs/search",
                      {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in found]
    found = [r for r, t in zip(found, tags)
             if "search.change" not in t and t.get("study") != "calibration"]
    assert len(found) == len(logged)
    statuses = {t.get("variant", t["mlflow.runName"]): r["info"]["status"]
                for r, t in zip(found, [t for t in tags if "search.change" not in t
                                        and t.get("study") != "calibration"])}
    assert statuses.pop("broken") == "FAILED"
    assert set(statuses.values()) == {"FINISHED"}
    alias = http_json(mlflow_server, "/api/2.0/mlflow/registered-models/alias"
                      "?name=tflite-quant-lab&alias=candidate")["model_version"]
    server = MlflowClient(mlflow_server)
    model_dir = server.download_artifacts(alias["run_id"], "model", str(tmp_path / "dl"))
    assert next(Path(model_dir).glob("*.tflite")).stat().st_size > 0
