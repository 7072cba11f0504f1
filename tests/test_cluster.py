"""Sweeps on a real Ray cluster: two nodes started on this machine the way a cluster is started
on many (`ray start --head`, then `ray start --address=...`), jobs logging to a real
`mlflow server`, and one job's worker killed mid-job (`hydra/launcher=ray`,
pipeline/cluster.py)."""

from __future__ import annotations

import csv
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from conftest import TINY_OVERRIDES
from pipeline import params as params_mod
from pipeline.cluster import stop_cluster
from test_bad_input import free_port
from test_e2e import http_json, mlflow_server  # noqa: F401  (a fixture)

BIN = Path(sys.executable).parent
VARIANTS = ("float32", "dynamic_range")  # the two the jobs build (the others deleted)
JOB_OVERRIDES = (*(o for o in TINY_OVERRIDES if not o.startswith("calibration.")),
                 *(f"~quantization.variants.{v}" for v in
                   params_mod.compose()["quantization"]["variants"] if v not in VARIANTS),
                 "evaluate.kernel_paths=[xnnpack]", "benchmark.num_threads=[1]",
                 "calibration=off")  # neither variant takes calibration samples


def ray_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True,
                          timeout=300)


def shell_env() -> dict[str, str]:
    """A new shell's environment: without the MLflow store and Ray cluster that earlier tests
    in this pytest process set (`mlflow.set_tracking_uri` exports MLFLOW_TRACKING_URI)."""
    return {k: v for k, v in os.environ.items()
            if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}


@pytest.fixture
def ray_cluster(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A head node and a second node joining it, 1 CPU each, with token authentication (the
    same token on every node and the launching machine). The nodes' own environment names
    another MLflow store (`elsewhere.db`), which the jobs must not log to. Yields the
    environment of a shell on the launching machine (RAY_ADDRESS set)."""
    port = free_port()
    env = {**shell_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    nodes = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'elsewhere.db'}"}
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths are limited
    try:
        head = ray_cli(["start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                        "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats",
                        f"--temp-dir={temp}"], nodes)
        assert head.returncode == 0, head.stdout + head.stderr
        node = ray_cli(["start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1",
                        "--num-cpus=1", "--disable-usage-stats"], nodes)
        assert node.returncode == 0, node.stdout + node.stderr
        yield {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:  # this cluster only: `ray stop` would also stop the other pytest worker's Ray
        stop_cluster(temp, port)
        shutil.rmtree(temp, ignore_errors=True)


def job_workers() -> list[int]:
    """Pids of Ray worker processes running a sweep job (Ray titles them `ray::_run_job`)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(
                    b"ray::_run_job"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
def test_a_sweep_on_two_ray_nodes_loses_nothing_when_a_worker_dies(
        tmp_path: Path, ray_cluster: dict[str, str], mlflow_server: str) -> None:  # noqa: F811
    log_path = tmp_path / "sweep.log"
    with log_path.open("w") as log:
        sweep = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "-m", "hydra/launcher=ray",
             "hydra.launcher.ray.remote.num_cpus=1", "model=small_cnn,tiny_cnn", "seed=1,2",
             *JOB_OVERRIDES, f"tracking.uri={mlflow_server}"],
            cwd=tmp_path, env=ray_cluster, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while not job_workers():  # the first jobs start on both nodes
                assert sweep.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "no job started in 600 s"
                time.sleep(0.5)
            time.sleep(10)  # into the job: importing TensorFlow, preparing data, training
            victim = job_workers()[0]
            os.kill(victim, signal.SIGKILL)
            returncode = sweep.wait(timeout=1800)
        finally:
            if sweep.poll() is None:
                sweep.kill()
    out = log_path.read_text()
    assert returncode == 0, out[-3000:]
    assert f"Worker PID: {victim}" in out and "the task will be retried" in out  # Ray saw it

    exp = http_json(mlflow_server, "/api/2.0/mlflow/experiments/get-by-name"
                    "?experiment_name=tflite-quantization-lab")["experiment"]
    runs = http_json(mlflow_server, "/api/2.0/mlflow/runs/search",
                     {"experiment_ids": [exp["experiment_id"]], "max_results": 1000})["runs"]

    def tags(run: dict) -> dict[str, str]:
        return {t["key"]: t["value"] for t in run["data"].get("tags", [])}

    def children(run_id: str) -> list[dict]:
        return [r for r in runs if tags(r).get("mlflow.parentRunId") == run_id]

    assert not [r for r in runs if r["info"]["status"] == "RUNNING"]  # none left RUNNING
    [sweep_run] = [r for r in runs if tags(r).get("pipeline") == "hydra-sweep"]
    assert sweep_run["info"]["status"] == "FINISHED"
    jobs = children(sweep_run["info"]["run_id"])
    assert sorted(r["info"]["run_name"] for r in jobs) == [  # nothing lost, nothing twice
        "job 0: model=small_cnn seed=1", "job 1: model=small_cnn seed=2",
        "job 2: model=tiny_cnn seed=1", "job 3: model=tiny_cnn seed=2"]
    for job in jobs:
        assert job["info"]["status"] == "FINISHED"
        params = {p["key"]: p["value"] for p in job["data"]["params"]}
        assert params["evaluate.workers"] == "1"  # the job's own CPU, as asked of Ray
        variants = children(job["info"]["run_id"])
        assert sorted(tags(v)["variant"] for v in variants) == sorted(VARIANTS)
        for variant in variants:
            assert variant["info"]["status"] == "FINISHED"
            metrics = {m["key"]: m["value"] for m in variant["data"]["metrics"]}
            assert 0.2 < metrics["accuracy"] <= 1.0  # trained for real, beats chance
    artifacts = http_json(mlflow_server, "/api/2.0/mlflow/artifacts/list"
                          f"?run_id={sweep_run['info']['run_id']}&path=summary")["files"]
    assert {"summary/sweep_summary.csv", "summary/sweep_summary.png"} <= {
        a["path"] for a in artifacts}
    [summary] = tmp_path.glob("multirun/*/*/sweep_summary.csv")
    rows = list(csv.DictReader(summary.open()))
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert not (tmp_path / "elsewhere.db").exists()  # every job logged to the sweep's server


def test_a_job_that_ray_gives_up_on_is_its_row_with_the_reason(tmp_path: Path) -> None:
    """The summary of a sweep where Ray gave up on job 1 (its worker died more often than it
    retries): job 1 is a failed row that says why; the others are as they were."""
    import yaml

    from pipeline.io import write_json
    from pipeline.layout import Layout
    from pipeline.tracking import sweep

    for job in (0, 1):
        lay = Layout(tmp_path / str(job))
        (lay.root / ".hydra").mkdir(parents=True)
        (lay.root / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={job}"]))
        write_json(lay.report("summary.json"), {"int8": {
            "status": "ok", "accuracy": 0.9, "accuracy_drop": 0.01, "size_bytes": 1000,
            "latency_ms_p50": 0.1}})
        write_json(lay.report("recommendation.json"), {
            "candidate": "int8", "verdicts": {"int8": "within"}, "evidence": "within"})
    write_json(tmp_path / "1" / sweep.FAILURE_FILE,
               {"job": 1, "reason": "WorkerCrashedError: the worker died"})
    rows = sweep.summarize(tmp_path, ["seed"])
    assert [(r["job"], r["status"]) for r in rows] == [(0, "ok"), (1, "failed")]
    assert rows[1]["reason"] == "WorkerCrashedError: the worker died"
    assert rows[1]["overrides"] == "seed=1"


def test_runs_a_dead_worker_left_running_are_ended_killed(tmp_path: Path) -> None:
    """A real SQLite store: under a sweep run, a job's run and its variant left RUNNING (its
    worker was killed mid-logging) end KILLED with a reason; finished runs and runs outside
    the sweep are not touched."""
    from mlflow.tracking import MlflowClient

    from pipeline.cluster import end_stale_runs

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("lab")

    def run(parent: str | None, status: str | None = None) -> str:
        tags = {"mlflow.parentRunId": parent} if parent else {}
        run_id = client.create_run(exp, tags=tags).info.run_id
        if status:
            client.set_terminated(run_id, status)
        return run_id

    sweep_run = run(None)
    done_job = run(sweep_run, "FINISHED")
    dead_job = run(sweep_run)
    dead_variant = run(dead_job)
    done_variant = run(dead_job, "FINISHED")
    elsewhere = run(None)  # another execution, still running: not this sweep's
    assert sorted(end_stale_runs(uri, sweep_run)) == sorted([dead_job, dead_variant])
    status = {r: client.get_run(r).info.status for r in
              (sweep_run, done_job, dead_job, dead_variant, done_variant, elsewhere)}
    assert status == {sweep_run: "RUNNING", done_job: "FINISHED", dead_job: "KILLED",
                      dead_variant: "KILLED", done_variant: "FINISHED", elsewhere: "RUNNING"}
    assert "worker died" in client.get_run(dead_job).data.tags["error"]


def test_ray_init_connects_without_sizes_and_starts_with_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.cluster import init_kwargs, job_cpus

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert init_kwargs({"address": None}) == {"address": "local",
                                              "object_store_memory": 78643200,
                                              "include_dashboard": False}
    assert init_kwargs({"address": "10.0.0.1:6379", "object_store_memory": 1,
                        "num_cpus": 4}) == {"address": "10.0.0.1:6379"}
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert init_kwargs({"address": None, "num_cpus": 2}) == {}
    assert job_cpus({}) == 1 and job_cpus({"num_cpus": 2}) == 2
    with pytest.raises(ValueError, match="num_cpus must be 1 or more"):
        job_cpus({"num_cpus": 0})


@pytest.mark.slow
def test_rows_as_ray_tasks_each_end_as_a_result_or_its_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`make compat LAUNCHER=ray`'s engine on a local Ray: every row comes back, the one whose
    task raised as its reason, and each task sees its CPUs as its thread count."""
    import math

    import ray

    from pipeline.cluster import run_rows

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    try:
        rows = {args: (result, error) for args, result, error in run_rows(
            math.sqrt, [(16.0,), (-1.0,), (9.0,)], launcher="ray", cpus=1)}
        threads = list(run_rows(os.getenv, [("TF_NUM_INTRAOP_THREADS",)], "ray", cpus=1))
    finally:
        ray.shutdown()
    assert rows == {(16.0,): (4.0, None), (9.0,): (3.0, None),
                    (-1.0,): (None, "ValueError: math domain error")}
    assert threads == [(("TF_NUM_INTRAOP_THREADS",), "1", None)]
    assert list(run_rows(math.sqrt, [(4.0,)])) == [((4.0,), 2.0, None)]  # local: here
    with pytest.raises(ValueError, match="launcher must be local or ray"):
        list(run_rows(math.sqrt, [(4.0,)], launcher="slurm"))


@pytest.mark.slow
def test_a_sweep_asking_more_cpus_than_the_cluster_has_stops_before_any_job(
        tmp_path: Path) -> None:
    """One line and exit 2 before any job runs; the sweep's MLflow run ends FAILED."""
    from mlflow.tracking import MlflowClient

    env = shell_env()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "-m", "hydra/launcher=ray",
         "hydra.launcher.ray.remote.num_cpus=64", "seed=1,2", *JOB_OVERRIDES,
         f"tracking.uri={uri}"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    errors = [line for line in out.splitlines() if "error: " in line]
    assert len(errors) == 1 and errors[0].endswith(
        "error: each job asks for 64 CPUs (hydra.launcher.ray.remote.num_cpus) but the Ray "
        f"cluster has {os.cpu_count()}"), out[-3000:]
    assert "Traceback" not in out
    assert not list(tmp_path.glob("multirun/*/*/0"))  # no job ran
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name(
        "tflite-quantization-lab").experiment_id])
    assert run.data.tags["pipeline"] == "hydra-sweep" and run.info.status == "FAILED"
