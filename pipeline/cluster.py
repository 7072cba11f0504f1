"""Sweeps on a Ray cluster: Hydra's Ray launcher (`hydra/launcher=ray`), made safe for the lab.

Each sweep job is a Ray task that asks for the CPUs it uses (`ray.remote.num_cpus`); the
job's TensorFlow and LiteRT thread counts are set from the same number. The cluster is the
one `RAY_ADDRESS` names (`ray start --head` on one machine, `ray start --address=...` on the
others), or a local one started for the sweep when none is named.

What the plugin's own launcher (hydra-ray-launcher 1.2.2) does not, and this one does:
- it connects to an existing cluster: the plugin always passes `object_store_memory` to
  `ray.init`, which Ray refuses when it connects rather than starts;
- a job whose task Ray gives up on (its worker or node died more often than
  `ray.remote.max_retries`) is that job's failure, with Ray's reason, not the sweep's crash;
  each failure's reason is written to `<job dir>/failure.json` for the sweep summary;
- when the jobs end, no MLflow run of the sweep is left RUNNING: a job attempt whose worker
  was killed mid-logging cannot end its runs itself, so they are ended KILLED here;
- jobs run in the launching directory on every node (relative paths in the config mean the
  same files), and the sweep directory is made absolute before the jobs are shipped;
- every job logs to the store of the sweep run (as the launching process resolved it), not
  to whatever `MLFLOW_TRACKING_URI` a node's own environment has;
- progress: a line per job as it ends, with how many remain.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as PluginRayLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

from pipeline.io import write_json
from pipeline.tracking.sweep import FAILURE_FILE, sweep_run

log = logging.getLogger(__name__)

# Environment variables that set the thread pools of a job's libraries to its CPUs.
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")


class InProject:
    """A job's task function, run from the directory the sweep was launched in (a Ray
    worker starts elsewhere), so the config's relative paths mean the same files."""

    def __init__(self, task_function: Callable[[Any], Any], cwd: str) -> None:
        self.task_function = task_function
        self.cwd = cwd

    def __call__(self, cfg: Any) -> Any:
        if not Path(self.cwd).is_dir():
            raise FileNotFoundError(
                f"{self.cwd} does not exist on this node: every node needs the project at the "
                "same path (the same lockfile installed, the data readable)")
        os.chdir(self.cwd)
        return self.task_function(cfg)


def job_cpus(remote: dict[str, Any]) -> int:
    """The CPUs each job asks Ray for (`ray.remote.num_cpus`, Ray's default 1)."""
    cpus = remote.get("num_cpus", 1)
    if not isinstance(cpus, (int, float)) or cpus < 1:
        raise ValueError(f"hydra.launcher.ray.remote.num_cpus must be 1 or more, got {cpus!r}")
    return int(cpus)


def init_kwargs(init: dict[str, Any]) -> dict[str, Any]:
    """`ray.init`'s arguments: Ray refuses resource sizes when it connects to a cluster (an
    address given, or `RAY_ADDRESS` set), so they are kept only when it starts one; without
    an address it starts one (`local`), where Ray would look for the last cluster `ray start`
    started on this machine."""
    kwargs = {k: v for k, v in init.items() if v is not None}
    if kwargs.get("address") or os.environ.get("RAY_ADDRESS"):
        for key in ("object_store_memory", "num_cpus", "num_gpus", "resources"):
            kwargs.pop(key, None)
    else:  # a local cluster for this run alone, even if `ray start` left one running here
        kwargs["address"] = "local"
        kwargs.setdefault("object_store_memory", 78643200)  # the plugin's default, for CI
        kwargs.setdefault("include_dashboard", False)  # nobody watches it; it costs seconds
    return kwargs


def end_stale_runs(uri: str, sweep_run_id: str) -> list[str]:
    """End KILLED every run under the sweep run (jobs, their variants, trials) still RUNNING
    once every job has ended: an attempt whose worker died could not end its own."""
    from mlflow.tracking import MlflowClient

    from pipeline.tracking import store

    with store.store_lock(uri):
        client = MlflowClient(uri)
        experiment = client.get_run(sweep_run_id).info.experiment_id
        runs = client.search_runs([experiment], max_results=50000)
        children: dict[str, list[Any]] = {}
        for run in runs:
            children.setdefault(run.data.tags.get("mlflow.parentRunId", ""), []).append(run)
        stale, todo = [], [sweep_run_id]
        while todo:
            for run in children.get(todo.pop(), []):
                todo.append(run.info.run_id)
                if run.info.status == "RUNNING":
                    client.set_terminated(run.info.run_id, "KILLED")
                    client.set_tag(run.info.run_id, "error",
                                   "its job's worker died before it ended the run")
                    stale.append(run.info.run_id)
    if stale:
        log.warning("ended %d MLflow run(s) KILLED that dead job attempts left RUNNING",
                    len(stale))
    return stale


def _failed(overrides: Sequence[str], cfg: DictConfig, exc: BaseException) -> JobReturn:
    ret = JobReturn(overrides=list(overrides), cfg=cfg, hydra_cfg=cfg,
                    working_dir=os.getcwd(), task_name=str(cfg.hydra.job.name),
                    status=JobStatus.FAILED)
    ret.return_value = exc
    return ret


class RayLauncher(PluginRayLauncher):
    """Hydra's Ray launcher with the changes the module docstring lists."""

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        import ray
        from ray.exceptions import RayError

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        assert self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        remote = OmegaConf.to_container(self.ray_cfg.remote, resolve=True) or {}
        assert isinstance(remote, dict)
        cpus = job_cpus(remote)
        remote["num_cpus"] = cpus
        if not ray.is_initialized():
            init = OmegaConf.to_container(self.ray_cfg.init, resolve=True) or {}
            assert isinstance(init, dict)
            ray.init(**init_kwargs(init))
        total = ray.cluster_resources().get("CPU", 0)
        nodes = [n for n in ray.nodes() if n["Alive"]]
        log.info("Ray: %d jobs of %d CPU(s) each on a cluster of %g CPU(s) in %d node(s); "
                 "outputs in %s", len(job_overrides), cpus, total, len(nodes), sweep_dir)
        problem = self._problem(cpus, total, {n["NodeManagerAddress"] for n in nodes},
                                sweep_dir)
        if problem:  # one line, before any job runs; the sweep run ends FAILED at exit
            log.error("error: %s", problem)
            sys.exit(2)
        task = ray.remote(**remote)(_run_job)
        task_function = InProject(self.task_function, os.getcwd())
        uri = sweep_run(sweep_dir)["tracking_uri"]  # type: ignore[index]  # _problem checked
        pending: dict[Any, tuple[int, Sequence[str], DictConfig]] = {}
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config,
                                                                     list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = f"ray_job_{idx}"
                cfg.hydra.job.num = idx
                cfg.hydra.sweep.dir = str(sweep_dir)
                for name in THREAD_VARIABLES:  # the job's thread pools: its own CPUs
                    cfg.hydra.job.env_set[name] = str(cpus)
                # The sweep run's store, whatever MLFLOW_TRACKING_URI a node's shell has.
                cfg.hydra.job.env_set.MLFLOW_TRACKING_URI = uri
                if cfg.get("evaluate") is not None and cfg.evaluate.get("workers") is None:
                    cfg.evaluate.workers = cpus
            ref = task.remote(self.hydra_context, cfg, task_function, Singleton.get_state())
            pending[ref] = (idx, overrides, cfg)
        results: dict[int, JobReturn] = {}
        started = time.monotonic()
        try:
            while pending:
                [ref], _ = ray.wait(list(pending), num_returns=1)
                idx, overrides, cfg = pending.pop(ref)
                try:
                    ret = ray.get(ref)
                except RayError as exc:  # Ray gave up on the task: the job failed, not the sweep
                    ret = _failed(overrides, cfg, exc)
                if ret.status != JobStatus.COMPLETED:
                    job_dir = sweep_dir / str(cfg.hydra.sweep.subdir)
                    reason = f"{type(ret._return_value).__name__}: {ret._return_value}"
                    write_json(job_dir / FAILURE_FILE, {"job": idx, "reason": reason})
                results[idx] = ret
                log.info("job %d %s after %.0f s; %d still running or queued", idx,
                         "done" if ret.status == JobStatus.COMPLETED else "FAILED",
                         time.monotonic() - started, len(pending))
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop the jobs still on the cluster
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            self._end_stale_runs(sweep_dir)
        return [results[i] for i in sorted(results)]

    def _problem(self, cpus: int, total: float, hosts: set[str],
                 sweep_dir: Path) -> str | None:
        """Why the sweep cannot run on this cluster, or None."""
        from pipeline.tracking import store

        assert self.config is not None
        if total < cpus:
            return (f"each job asks for {cpus} CPUs (hydra.launcher.ray.remote.num_cpus) "
                    f"but the Ray cluster has {total:g}")
        uri = store.tracking_uri(str(self.config.tracking.uri))
        if len(hosts) > 1 and not uri.startswith(("http://", "https://")):
            return (f"the Ray cluster spans {len(hosts)} machines, and tracking.uri is {uri}: "
                    "jobs on other machines cannot share that store; start an MLflow server "
                    "and set tracking.uri=http://<host>:<port>")
        try:
            store.check_reachable(uri)
        except ValueError as exc:
            return str(exc)
        if sweep_run(sweep_dir) is None:
            return (f"the sweep's MLflow run was not opened ({sweep_dir / 'sweep_run.json'} "
                    "is missing; see the warning above)")
        return None

    def _end_stale_runs(self, sweep_dir: Path) -> None:
        sweep = sweep_run(sweep_dir)
        if sweep:
            end_stale_runs(sweep["tracking_uri"], sweep["run_id"])


def _run_job(hydra_context: Any, sweep_config: DictConfig, task_function: Any,
             singleton_state: dict[Any, Any]) -> JobReturn:
    """One job in a Ray worker, as the plugin runs it."""
    from hydra_plugins.hydra_ray_launcher._launcher_util import _run_job as run

    return run(hydra_context, sweep_config, task_function, singleton_state)


def run_rows(fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], launcher: str = "local",
             cpus: int = 2, max_retries: int = 2
             ) -> Iterator[tuple[tuple[Any, ...], Any, str | None]]:
    """`fn(*args)` for each job's args, yielding `(args, result, error)` as each ends.

    `local`: here, one after another (an exception propagates). `ray`: as Ray tasks on the
    cluster `RAY_ADDRESS` names (or a local one), each asking for `cpus` CPUs, with the
    thread pools of what it runs set to them; a task that raised, or whose worker or node
    died more than `max_retries` times, yields no result and Ray's reason as its error: that
    job's row, not the run's crash. `fn` must be importable on every node (a module-level
    function of the lab)."""
    if launcher == "local":
        for args in jobs:
            yield args, fn(*args), None
        return
    if launcher != "ray":
        raise ValueError(f"launcher must be local or ray, got {launcher!r}")
    import ray
    from ray.exceptions import RayError

    if not ray.is_initialized():
        ray.init(**init_kwargs({}))
    task = ray.remote(num_cpus=cpus, max_retries=max_retries)(_with_threads)
    pending = {task.remote(cpus, fn, *args): args for args in jobs}
    log.info("Ray: %d jobs of %d CPU(s) each on a cluster of %g CPU(s)", len(pending), cpus,
             ray.cluster_resources().get("CPU", 0))
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        args = pending.pop(ref)
        try:
            yield args, ray.get(ref), None
        except RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            yield args, None, f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1]}"


def _with_threads(cpus: int, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in a Ray worker, with what it starts using `cpus` threads."""
    os.environ.update({name: str(cpus) for name in THREAD_VARIABLES})
    return fn(*args)


LAUNCHERS = ("local", "ray")


def add_launcher_arguments(parser: Any) -> None:
    """`--launcher` (default: the LAUNCHER environment variable, else local) and `--cpus`, for
    the tools whose rows can run as Ray tasks (`make compat LAUNCHER=ray`)."""
    parser.add_argument("--launcher", choices=LAUNCHERS,
                        default=os.environ.get("LAUNCHER") or "local",
                        help="local: rows one after another here; ray: rows as Ray tasks on "
                        "the cluster RAY_ADDRESS names (or a local one)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs each row asks Ray for")


def stop_cluster(temp_dir: str | Path, port: int) -> int:
    """Kill the processes of the Ray cluster this machine started with `ray start --head
    --port=<port> --temp-dir=<temp_dir>` (and nodes that joined it here), with what they
    started, leaving any other Ray alone: `ray stop` would stop every Ray on the machine, a
    test's or a user's too. Linux (/proc). Returns how many processes were killed."""
    import signal

    marks = (str(temp_dir), f":{port} ", f"={port} ")
    procs: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        procs[int(entry.name)] = (ppid, cmdline)
    doomed = {pid for pid, (_, cmd) in procs.items() if any(m in cmd for m in marks)}
    grew = True
    while grew:  # and everything they started (workers, agents)
        more = {pid for pid, (ppid, _) in procs.items() if ppid in doomed} - doomed
        doomed |= more
        grew = bool(more)
    doomed.discard(os.getpid())
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(doomed)
