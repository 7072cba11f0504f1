"""MLflow for Hydra multirun sweeps: one sweep run; each job a child with its overrides as
params; each job's variants children of the job. At the end, a summary of each job's
candidate (`reports/recommendation.json`; table and plot) is logged on the sweep run.

Hydra calls this callback in the launching process (`hydra.callbacks.mlflow_sweep` in
conf/config.yaml); the jobs, possibly in parallel worker processes, find the sweep run's id
in `<sweep dir>/sweep_run.json`.
"""

from __future__ import annotations

import atexit
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pipeline import metrics
from pipeline.tracking import store
from pipeline.io import csv_text, read_json, write_json, write_text
from pipeline.layout import RECOMMENDATION, SUMMARY_JSON, Layout

log = logging.getLogger(__name__)

RUN_FILE = "sweep_run.json"
FAILURE_FILE = "failure.json"  # in a job directory (pipeline.cluster writes it): why it failed


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
        summary, rec_file = lay.report(SUMMARY_JSON), lay.report(RECOMMENDATION)
        failure = job / FAILURE_FILE  # written by the Ray launcher: why the job failed
        if failure.is_file() or not summary.is_file() or not rec_file.is_file():
            rows.append({"job": int(job.name), "overrides": _overrides(job, swept),
                         "status": "failed",
                         "reason": read_json(failure)["reason"] if failure.is_file() else
                         "no report: the job failed (its log is in the job directory)"})
            continue
        variants, rec = read_json(summary), read_json(rec_file)
        best = rec["candidate"]
        row = variants[best]
        rows.append({"job": int(job.name), "overrides": _overrides(job, swept), "status": "ok",
                     "candidate": best, "within_budget": rec["verdicts"].get(best) != "misses",
                     "evidence": rec["evidence"],
                     "accuracy": row["accuracy"], "accuracy_drop": row["accuracy_drop"],
                     "size_bytes": row["size_bytes"], "latency_ms_p50": row["latency_ms_p50"]})
    return rows


SEED_FIGURES = metrics.keys(metrics.SEEDS)


def across_seeds(sweep_dir: Path, swept: list[str]) -> list[dict[str, Any]]:
    """Per variant, the mean and standard deviation of `SEED_FIGURES` across the jobs that
    differ only in `seed` (grouped by the other swept overrides); empty when the sweep does
    not vary `seed`."""
    import numpy as np

    if "seed" not in swept:
        return []
    others = [k for k in swept if k != "seed"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()):
        summary = Layout(job).report(SUMMARY_JSON)
        if not summary.is_file():
            continue
        group = _overrides(job, others) if others else "all"
        for variant, row in read_json(summary).items():
            if row.get("status") == "ok":
                groups.setdefault((group, variant), []).append(row)
    out = []
    for (group, variant), rows in groups.items():
        entry: dict[str, Any] = {"group": group, "variant": variant, "seeds": len(rows)}
        for figure in SEED_FIGURES:
            values = np.array([r[figure] for r in rows], dtype=np.float64)
            entry[f"{figure}_mean"] = float(values.mean())
            entry[f"{figure}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out.append(entry)
    return out


def _plot_seeds(rows: list[dict[str, Any]], path: Path) -> Path:
    """Accuracy per variant, mean and standard deviation across seeds, one panel a group."""
    from pipeline import plots
    from pipeline.plots import pyplot

    plt = pyplot()
    groups = sorted({r["group"] for r in rows})
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4), squeeze=False)
    for ax, group in zip(axes[0], groups):
        mine = [r for r in rows if r["group"] == group]
        ax.errorbar(range(len(mine)), [r["accuracy_mean"] for r in mine],
                    yerr=[r["accuracy_std"] for r in mine], fmt="o", capsize=3)
        ax.set_xticks(range(len(mine)), [r["variant"] for r in mine], rotation=30, ha="right")
        ax.set(ylabel="test accuracy (mean, bars: std across seeds)",
               title=f"{group}: {mine[0]['seeds']} seeds")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return plots.save(fig, path)


def _overrides(job_dir: Path, swept: list[str]) -> str:
    path = job_dir / ".hydra" / "overrides.yaml"
    return job_label(list(OmegaConf.load(path)), swept) if path.is_file() else ""


def _plot(rows: list[dict[str, Any]], path: Path) -> Path:
    from pipeline import plots
    from pipeline.plots import pyplot

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
    return plots.save(fig, path)


class MlflowSweep(Callback):
    """Opens the sweep run at the start of a multirun and closes it at the end."""

    def __init__(self) -> None:
        self.client: Any = None
        self.run_id: str | None = None
        self.swept: list[str] = []
        self.sweep_dir: Path | None = None
        self.uri = ""

    def __getstate__(self) -> dict[str, Any]:
        """Shipped to remote jobs (the Ray launcher pickles Hydra's callbacks with each job):
        without the client, whose database connection cannot travel; jobs do not use it."""
        return {**self.__dict__, "client": None, "run_id": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = store.tracking_uri(config.tracking.uri)
        sweep_dir = Path(config.hydra.sweep.dir)
        store.check_reachable(uri)  # before any job runs
        with store.store_lock(uri):
            self.client = MlflowClient(uri)
            experiment_id = store.ensure_experiment(self.client, config.tracking.experiment,
                                                    uri)
            run = self.client.create_run(
                experiment_id, run_name=f"sweep {sweep_dir.name}",
                tags={"pipeline": "hydra-sweep", "sweep.dir": str(sweep_dir)})
        self.run_id = run.info.run_id
        self.sweep_dir = sweep_dir
        self.uri = uri
        params = {"sweep.params": str(OmegaConf.to_container(config.hydra.sweeper.params))
                  if config.hydra.sweeper.get("params") else "",
                  "sweep.overrides": " ".join(config.hydra.overrides.task),
                  "sweep.launcher": str(config.hydra.launcher.get("_target_", ""))}
        self.client.log_batch(self.run_id, params=[Param(k, v[:store.MAX_PARAM_LENGTH])
                                                   for k, v in params.items()])
        self.swept = swept_keys(list(config.hydra.overrides.task))
        write_json(sweep_dir / RUN_FILE, {"run_id": self.run_id, "tracking_uri": uri,
                                          "swept": self.swept})
        # A failing job aborts the multirun before on_multirun_end (Hydra's basic sweeper
        # raises its error): the summary, with that job's row, is written at exit then.
        atexit.register(self._abort)
        log.info("sweep run %s in %s", self.run_id, uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.run_id is not None:  # None: opening it failed (Hydra warned)
            self._finish(aborted=False)

    def _abort(self) -> None:
        if self.run_id is None:
            return
        try:
            self._finish(aborted=True)
        finally:  # the run ends FAILED even if the summary cannot be written
            self._end("FAILED")

    def _finish(self, aborted: bool) -> None:
        """Summary of every job (a failed one's row says why), logged on the sweep run,
        which ends FINISHED if the sweep was not aborted and every job completed."""
        assert self.sweep_dir is not None
        sweep_dir = self.sweep_dir
        rows = summarize(sweep_dir, self.swept)
        files = [write_text(sweep_dir / "sweep_summary.csv", csv_text(rows))]
        if any(r["status"] == "ok" for r in rows):
            files.append(_plot(rows, sweep_dir / "sweep_summary.png"))
        seeds = across_seeds(sweep_dir, self.swept)
        if seeds:  # a sweep over seed: how much each variant's figures move with it
            files += [write_text(sweep_dir / "sweep_seeds.csv", csv_text(seeds)),
                      _plot_seeds(seeds, sweep_dir / "sweep_seeds.png")]
        uri = self.uri
        with store.store_lock(uri):
            for path in files:
                self.client.log_artifact(self.run_id, str(path), artifact_path="summary")
            self.client.set_tag(self.run_id, "sweep.jobs", str(len(rows)))
        ok = not aborted and rows and all(r["status"] == "ok" for r in rows)
        self._end("FINISHED" if ok else "FAILED")

    def _end(self, status: str) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status)
            log.info("sweep run %s: %s", self.run_id, status)
            self.run_id = None
