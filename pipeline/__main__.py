"""The whole pipeline in one process, as a Hydra app over the same `conf/` and the same step
functions as `dvc repro`. Outputs go into the Hydra job directory, never over DVC's.

    python -m pipeline                                   # one run: outputs/<date>/<time>/
    python -m pipeline -m model=small_cnn,tiny_cnn quantization.calibration_samples=50,500
    python -m pipeline -m hydra/launcher=parallel ...    # jobs in parallel (joblib)
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline import quiet
from pipeline.console import USER_ERRORS
from pipeline.config import parse_config
from pipeline.params import render_params
from pipeline.io import read_json, write_text
from pipeline.layout import RECOMMENDATION, SUMMARY_JSON, Layout
from pipeline.tracking.sweep import job_label, sweep_run
from pipeline.steps import all as all_steps

log = logging.getLogger("pipeline")


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float:
    """Run every step for one composed config; returns the candidate's test accuracy (the
    report step's decision, `reports/recommendation.json`), for sweepers that optimize."""
    quiet.setup()
    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)
    try:
        config = parse_config(raw)
    except ValueError as exc:  # one line, no traceback wall
        log.error("error: %s", exc)
        sys.exit(2)
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    params_file = write_text(out / "params.yaml", render_params(raw))
    overrides = list(hc.overrides.task)
    sweep = sweep_run(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
    name = f"job {hc.job.num}: {job_label(overrides, sweep['swept'])}" if sweep else None
    try:
        result = all_steps.run(config, raw, out, params_file,
                               parent_run_id=sweep["run_id"] if sweep else None,
                               extra_params={"overrides": " ".join(overrides) or "none",
                                             **override_params(overrides)},
                               run_name=name)
    except USER_ERRORS as exc:
        if sweep:  # a sweep's job: Hydra records it and its callback reports the sweep
            raise
        # Bad input (a missing data file, a model that does not fit the data): the same one
        # line and exit code 2 as a stage script, not Hydra's traceback.
        log.error("error: %s", exc)
        sys.exit(2)
    log.info("job done: parent run %s, outputs in %s", result["parent_run_id"], out)
    return candidate_accuracy(Layout(out))


def override_params(overrides: list[str]) -> dict[str, str]:
    """`override.<key>` params of a job's overrides; `+key=v` adds and `~key` deletes a key,
    and MLflow refuses `+` and `~` in a param's name: a deletion's value is `(deleted)`."""
    params = {}
    for override in overrides:
        key, _, value = override.partition("=")
        if key.startswith("~"):
            value = "(deleted)"
        params[f"override.{key.lstrip('+~')}"] = value
    return params


def candidate_accuracy(layout: Layout) -> float:
    """The test accuracy of the candidate that the report step chose."""
    candidate = read_json(layout.report(RECOMMENDATION))["candidate"]
    return float(read_json(layout.report(SUMMARY_JSON))[candidate]["accuracy"])


def unknown_override(argv: list[str]) -> str | None:
    """A one-line error for an override whose key the config does not have, else None.

    Hydra refuses such a typo too, but over five lines; this names the key and the valid keys
    beside it on one line, before anything runs.
    """
    from pipeline.params import CONF_DIR, compose

    composed: dict | None = None
    # Group choices (`model=file`) decide which keys exist: compose with them (a sweep's
    # first choice), as Hydra will.
    groups = [f"{k}={v.split(',')[0]}" for k, sep, v in (a.partition("=") for a in argv)
              if sep and "." not in k and "/" not in k and not k.startswith(("-", "+", "~"))
              and (CONF_DIR / k).is_dir()]
    for arg in argv:
        key, sep, _ = arg.partition("=")
        if not sep or arg.startswith(("-", "+", "~")) or "/" in key or key.startswith("hydra."):
            continue
        composed = composed if composed is not None else compose(groups)
        node: object = composed
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(parts[:i]) or "the top level"
                valid = ", ".join(node) if isinstance(node, dict) else "none"
                return f"error: unknown config key {key!r}; valid keys in {where}: {valid}"
            node = node[part]
    return None


if __name__ == "__main__":
    import warnings

    # conf/hydra/launcher/ray.yaml shares its name with the Ray plugin's schema, which Hydra
    # then checks it against (it passes) and says so in a deprecation warning.
    warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/ray' is validated against")
    problem = unknown_override(sys.argv[1:])
    if problem:
        print(problem, file=sys.stderr)
        sys.exit(2)
    from pipeline import signals

    with signals.as_interrupt():  # SIGTERM unwinds like Ctrl-C: runs end KILLED or FAILED
        main()
