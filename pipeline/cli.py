"""The body of every stage script (`stage`): arguments, config, the warm worker, and the
stage's wall time."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import quiet, reads
from pipeline.console import parser, run

log = logging.getLogger("pipeline")

# Each stage that succeeds records its wall time here (relative to the directory it runs in,
# which is the project under `dvc repro`): `<stage>.json`, read by `make bench`. Local, not
# tracked: it says how long this machine took the last time each stage ran.
STAGE_TIMES = Path(".stage-times")
_STARTED = time.time()  # this module is imported first by every stage script


def record_stage_time(stage: str, started: float = _STARTED) -> None:
    """Write `STAGE_TIMES/<stage>.json` (started, ended, seconds), atomically; a machine that
    cannot write it loses the figure, never the stage."""
    ended = time.time()
    try:
        STAGE_TIMES.mkdir(exist_ok=True)
        tmp = STAGE_TIMES / f".{stage}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"stage": stage, "started": started, "ended": ended,
                                   "seconds": round(ended - started, 3)}))
        os.replace(tmp, STAGE_TIMES / f"{stage}.json")
    except OSError as exc:
        log.warning("could not record the stage's time in %s: %s", STAGE_TIMES, exc)


def stage(doc: str | None, step: Callable[..., Any], per_variant: bool = False,
          with_config: bool = False, warm: bool = False) -> None:
    """The whole body of a stage script (`stages/<stage>.py`): parse `--params` and
    `--root` (and the variant), load and validate the config, and call
    `step(cfg, Layout(root), [variant], [raw=..., params_file=...])`.

    Args:
        doc: The script's docstring (its first line is the help text).
        step: The stage's step function (`pipeline.steps.<stage>.run`).
        per_variant: The stage runs once per variant: a positional `variant` argument.
        with_config: Also pass the raw config mapping and the params file (the track stage).
        warm: A TensorFlow stage: run it in the project's warm worker (`pipeline.worker`),
            which has TensorFlow imported already, unless `LAB_WORKER=0`.
    """
    quiet.setup()
    variant = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    name = Path(sys.argv[0]).stem + (f"@{variant}" if per_variant and variant else "")
    if warm:
        from pipeline import worker

        code = worker.run_stage(Path(sys.argv[0]).resolve().parent.parent)
        if code is not None:
            if code == 0:
                record_stage_time(name)
            sys.exit(code)

    def main() -> None:
        from pipeline.params import load_params
        from pipeline.layout import Layout

        p = parser(doc)
        p.add_argument("--root", default=".", type=Path,
                       help="where the stages' outputs are (pipeline.layout)")
        if per_variant:
            p.add_argument("variant")
        args = p.parse_args()
        cfg, raw = load_params(args.params)
        view, read = reads.recording(cfg)  # what the step reads, for its params in dvc.yaml
        extra: dict[str, Any] = {"variant": args.variant} if per_variant else {}
        if with_config:
            extra.update(raw=raw, params_file=Path(args.params))
        step(view, Layout(args.root), **extra)
        reads.enforce(read, Path(sys.argv[0]).resolve().parent.parent / "dvc.yaml",
                      Path(sys.argv[0]).stem, args.variant if per_variant else None)

    run(main)
    from pipeline.worker import ENV_CHILD

    if not os.environ.get(ENV_CHILD):  # in the warm worker's fork, the caller records it
        record_stage_time(name)
