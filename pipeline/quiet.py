"""A clean console: third-party lines that are not news are silenced at their source, here.

On a CPU machine every TensorFlow stage used to print `E0000 ... failed call to cuInit` (an
"error" wherever there is no GPU) and absl's `WARNING: All log messages before
absl::InitializeLog() ...`, every calibrated conversion the converter's `fully_quantize: 0,
inference_type: 6, ...`, and every LiteRT Quantizer calibration LiteRT's warning that
`experimental_preserve_all_tensors` is for debugging. Errors that are not errors teach users
to ignore errors. The lab's own progress lines, and anything else a library prints, stay.

- `setup()`: the environment and warning filters, once per process (every stage, the warm
  worker), before TensorFlow is imported; `RecordFilter` on the log handlers.
- `native()`: around a call whose C++ code writes to the process's stderr (fd 2) directly,
  out of Python's reach: what it writes is passed on as it comes, less the `NOISE` lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator

# Whole lines, as the libraries print them (TensorFlow 2.21, ai-edge-litert 2.3).
NOISE = re.compile("|".join((
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"I0000 [^\]]*cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will "
    r"not be used\.",
    r"E0000 [^\]]*cuda_platform\.cc:\d+\] failed call to cuInit: .*",
    r"fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, "
    r"output_inference_type: \w+",
)))
# TensorFlow's C++ log level: 3 keeps its ERROR lines too (cuInit; "NodeDef mentions
# attribute use_unbounded_threadpool" when Keras trains). A real failure raises in Python,
# and the lab reports that.
ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3"}
# Python warnings of the same kind: (message regex, category).
WARNINGS = ((r".*experimental_preserve_all_tensors.*", UserWarning),)
# Python log records of the same kind: (logger, message regex). The lab exports its own
# forward pass (absl: its inputs' generated names; tensorflow: the temporary assets folder)
# and compiles the models it loads itself.
RECORDS = (("absl", r"Function `\w+` contains input name\(s\) .* with unsupported characters"),
           ("tensorflow", r"Assets written to: "),
           ("tensorflow", r"No training configuration found in the save file"))


def setup() -> None:
    """Set `ENVIRONMENT` (a value the user set wins) and ignore `WARNINGS`."""
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    for message, category in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


class RecordFilter(logging.Filter):
    """Drops the `RECORDS` log records (on the handlers the lab sets up)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(record.name == name and re.match(pattern, record.getMessage())
                       for name, pattern in RECORDS)


@contextlib.contextmanager
def native() -> Iterator[None]:
    """Within the block, fd 2 goes through a pipe whose lines are passed on to the real stderr
    at once (progress bars too: a `\\r` ends a piece), except those `NOISE` matches whole."""
    sys.stderr.flush()
    try:
        target = os.dup(2)
    except OSError:  # no stderr at all: nothing to filter
        yield
        return
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def pump() -> None:
        pending = b""
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                pieces = re.split(rb"(?<=[\r\n])", pending + chunk)
                pending = pieces.pop()  # not ended yet
                _write(target, pieces)
        _write(target, [pending])

    thread = threading.Thread(target=pump, name="quiet", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(target, 2)  # the pipe's last writer closes: the pump reads to its end
        thread.join(timeout=10)
        if not thread.is_alive():  # else a child process still holds the pipe: leave it be
            os.close(target)


def _write(fd: int, pieces: list[bytes]) -> None:
    kept = b"".join(p for p in pieces
                    if p and not NOISE.fullmatch(p.rstrip(b"\r\n").decode(errors="replace")))
    try:
        while kept:
            kept = kept[os.write(fd, kept):]
    except OSError:  # stderr went away: nothing to tell it
        pass
