"""MLflow for Hydra multirun sweeps: one sweep run; each job a child with its overrides as
params; each job's variants children of the job. At the end, a summary of each job's
candidate (`reports/recommendation.json`; table and plot) is logged on the sweep run.

Hydra calls this callback in the launching process (`hydra.callbacks.mlflow_sweep` in
conf/config.yaml); the jobs, possibly in parallel worker processes, find the sweep run's id
in `<sweep dir>/sweep_run.json`.
"""

from __future__ import annotations

import atexit
import csv
import io
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pipeline.report import tracking
from pipeline.io import read_json, write_json, write_text
from pipeline.layout import Layout

log = logging.getLogger(__name__)

RUN_FILE = "sweep_run.json"


def sweep_run(sweep_dir: str | Path) -> dict[str, Any] | None:
    """`run_id` and `swept` (the keys the sweep varies) if this job belongs to a sweep."""
    path = Path(sweep_dir) / RUN_FILE
    return read_json(path) if path.is_file() else None


def swept_keys(task_overrides: list[str]) -> list[str]:
    """Keys of the overrides that a sweep varies (`a=1,2`, `b=range(1,3)`), as Hydra's own
    override parser reads them (`model.filters=[4,8]` is one value, not a sweep)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(task_overrides))
    return [o.key_or_group for o in parsed if o.is_sweep_override()]


def job_label(overrides: list[str], swept: list[str]) -> str:
    """A job's name from the overrides of the swept keys only: `model=tiny_cnn seed=2`."""
    chosen = [o for o in overrides if o.partition("=")[0].lstrip("+~") in swept]
    return " ".join(chosen) or "defaults"


def summarize(sweep_dir: Path, swept: list[str]) -> list[dict[str, Any]]:
    """One row per job: its overrides and its candidate, as its report step decided it
    (`reports/recommendation.json`), with the candidate's figures."""
    rows = []
    for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()):
        lay = Layout(job)
        summary, rec_file = lay.report("summary.json"), lay.report("recommendation.json")
        if not summary.is_file() or not rec_file.is_file():
            rows.append({"job": int(job.name), "overrides": _overrides(job, swept),
                         "status": "failed"})
            continue
        variants, rec = read_json(summary), read_json(rec_file)
        best = rec["candidate"]
        row = variants[best]
        rows.append({"job": int(job.name), "overrides": _overrides(job, swept), "status": "ok",
                     "candidate": best, "within_budget": best not in rec["misses"],
                     "accuracy": row["accuracy"], "accuracy_drop": row["accuracy_drop"],
                     "size_bytes": row["size_bytes"], "latency_ms_p50": row["latency_ms_p50"]})
    return rows


def _overrides(job_dir: Path, swept: list[str]) -> str:
    path = job_dir / ".hydra" / "overrides.yaml"
    return job_label(list(OmegaConf.load(path)), swept) if path.is_file() else ""


def _plot(rows: list[dict[str, Any]], path: Path) -> Path:
    from pipeline.io import atomic_path
    from pipeline.report.plots import pyplot

    plt = pyplot()
    ok = [r for r in rows if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(ok) + 2))
    labels = [r["overrides"] for r in ok]
    ax.barh(labels, [r["size_bytes"] / 1024 for r in ok],
            color=["tab:green" if r["within_budget"] else "tab:gray" for r in ok])
    for i, r in enumerate(ok):
        ax.text(r["size_bytes"] / 1024, i, f" {r['candidate']}, acc {r['accuracy']:.3f}",
                va="center", fontsize=8)
    ax.set(xlabel="size of the candidate (KiB); green: within the accuracy budget",
           title="candidate per sweep job")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


class MlflowSweep(Callback):
    """Opens the sweep run at the start of a multirun and closes it at the end."""

    def __init__(self) -> None:
        self.client: Any = None
        self.run_id: str | None = None
        self.swept: list[str] = []

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = tracking.tracking_uri(config.tracking.uri)
        sweep_dir = Path(config.hydra.sweep.dir)
        tracking.check_reachable(uri)  # before any job runs
        with tracking.store_lock(uri):
            self.client = MlflowClient(uri)
            experiment_id = tracking.ensure_experiment(self.client, config.tracking.experiment)
            run = self.client.create_run(
                experiment_id, run_name=f"sweep {sweep_dir.name}",
                tags={"pipeline": "hydra-sweep", "sweep.dir": str(sweep_dir)})
        self.run_id = run.info.run_id
        params = {"sweep.params": str(OmegaConf.to_container(config.hydra.sweeper.params))
                  if config.hydra.sweeper.get("params") else "",
                  "sweep.overrides": " ".join(config.hydra.overrides.task),
                  "sweep.launcher": str(config.hydra.launcher.get("_target_", ""))}
        self.client.log_batch(self.run_id, params=[Param(k, v[:tracking.MAX_PARAM_LENGTH])
                                                   for k, v in params.items()])
        self.swept = swept_keys(list(config.hydra.overrides.task))
        write_json(sweep_dir / RUN_FILE, {"run_id": self.run_id, "tracking_uri": uri,
                                          "swept": self.swept})
        # A failing job aborts the multirun before on_multirun_end: end the run FAILED then.
        atexit.register(self._end, "FAILED")
        log.info("sweep run %s in %s", self.run_id, uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = summarize(sweep_dir, self.swept)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=sorted({k for r in rows for k in r}),
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        table = write_text(sweep_dir / "sweep_summary.csv", buf.getvalue())
        uri = tracking.tracking_uri(config.tracking.uri)
        with tracking.store_lock(uri):
            self.client.log_artifact(self.run_id, str(table), artifact_path="summary")
            if any(r["status"] == "ok" for r in rows):
                plot = _plot(rows, sweep_dir / "sweep_summary.png")
                self.client.log_artifact(self.run_id, str(plot), artifact_path="summary")
            self.client.set_tag(self.run_id, "sweep.jobs", str(len(rows)))
        self._end("FINISHED" if all(r["status"] == "ok" for r in rows) else "FAILED")

    def _end(self, status: str) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status)
            log.info("sweep run %s: %s", self.run_id, status)
            self.run_id = None
