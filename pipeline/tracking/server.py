"""Start an MLflow server (or UI) in the background and return once it answers, or stop it
again: what `make mlflow-server-start` and `make mlflow-server-stop` run.

    python -m pipeline.tracking.server start --port 5000 --log mlflow-server.log -- CMD...
    python -m pipeline.tracking.server stop --port 5000
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def pid_file(port: int) -> Path:
    return Path(f".mlflow-server-{port}.pid")


def answers(port: int, timeout: float = 2.0) -> bool:
    """True if something on 127.0.0.1:`port` answers MLflow's `/health`."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def start(cmd: list[str], port: int, log: Path, wait: float = 180.0) -> int:
    """Run `cmd` in its own session, logging to `log`; wait until the port answers.

    Returns:
        The server's pid.

    Raises:
        RuntimeError: if the port is taken, or the server exits or does not answer in time
            (with the end of its log).
    """
    if answers(port):
        raise RuntimeError(f"something already answers on 127.0.0.1:{port}; stop it "
                           f"(make mlflow-server-stop) or choose another PORT=")
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    pid_file(port).write_text(str(proc.pid))
    deadline = time.monotonic() + wait
    while not answers(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(port)
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"the server on port {port} did not start:\n{tail}")
        time.sleep(0.5)
    return proc.pid


def stop(port: int, wait: float = 30.0) -> bool:
    """Stop the server started for `port` (its whole process group); False if none was."""
    path = pid_file(port)
    if not path.is_file():
        return False
    pid = int(path.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            os.killpg(pid, 0)  # raises once the group is gone
            time.sleep(0.2)
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    path.unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--log", type=Path, default=Path("mlflow-server.log"))
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    cmd = argv[cut + 1:]  # after --: the server command
    if args.action == "stop":
        print(f"stopped the server on port {args.port}" if stop(args.port)
              else f"no server started on port {args.port}")
        return
    if not cmd:
        sys.exit("error: give the server command after --")
    try:
        pid = start(cmd, args.port, args.log)
    except RuntimeError as exc:
        sys.exit(f"error: {exc}")
    print(f"tracking server on http://127.0.0.1:{args.port} (pid {pid}, log {args.log}); "
          "stop it with: make mlflow-server-stop")


if __name__ == "__main__":
    main()
