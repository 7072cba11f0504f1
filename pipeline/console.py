"""Every command's console: logging, the `--params` option, and one clear line for bad input
(no traceback, exit code 2) or an interruption."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from pipeline import quiet, signals

# Errors that mean bad input (config, files): one line, no traceback, exit code 2.
USER_ERRORS = (ValueError, FileNotFoundError)


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for handler in logging.root.handlers:
        if not any(isinstance(f, quiet.RecordFilter) for f in handler.filters):
            handler.addFilter(quiet.RecordFilter())


def parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the `--params` option every stage has."""
    p = argparse.ArgumentParser(description=(description or "").strip().splitlines()[0])
    p.add_argument("--params", default="params.yaml", help="the composed config")
    return p


def run(main: Callable[[], None]) -> None:
    """Run a stage's `main`, turning bad input into one error line and exit code 2.

    SIGTERM is handled like Ctrl-C (SIGINT): the stage unwinds, so temporary files are
    removed (outputs stay old or absent) and MLflow runs end KILLED; exit code 128 + signal.
    """
    setup_logging()
    try:
        with signals.as_interrupt():
            main()
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as exc:
        print(f"interrupted ({str(exc) or 'SIGINT'}): outputs left as they were",
              file=sys.stderr)
        sys.exit(signals.exit_code(exc))
