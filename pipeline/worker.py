"""A warm worker for the TensorFlow stages: `import tensorflow` costs 5-9 s, and `dvc repro`
runs a dozen stages that need it (train, qat, layer_errors, one quantize per variant), each
in a new process. The first such stage starts a worker that imports TensorFlow once; every
TensorFlow stage then runs in a process forked from it, with the stage's own arguments,
working directory, environment and standard streams, and exits with the stage's code.

- One stage, one forked process: a stage cannot leak into the next, and a crash stays
  there. The result is the same as in a fresh process (same code, seeds set by the stage).
- The worker belongs to one project, interpreter and version of the code: its socket's name
  is a hash of them, so a change to any module starts a new worker (the old one exits when
  it has been idle for `IDLE_SECONDS`).
- Ctrl-C and SIGTERM sent to the stage are passed on to the forked process, which unwinds
  as any stage does (`pipeline.signals`): outputs stay as they were.
- `LAB_WORKER=0` runs every stage in its own fresh process, as without the worker; so does
  any failure to reach or start one.

    python -m pipeline.worker serve --socket PATH   # started by the first stage, detached
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# A worker with no stage running and no request for this long exits (LAB_WORKER_IDLE: seconds).
IDLE_SECONDS = float(os.environ.get("LAB_WORKER_IDLE", 300.0))
START_SECONDS = 120.0  # how long a stage waits for a new worker to import TensorFlow
ENV_SWITCH = "LAB_WORKER"  # "0": no worker
ENV_CHILD = "LAB_IN_WORKER"  # set in the forked process: never ask for a worker from it
PRELOAD = ("tensorflow", "tf_keras", "tensorflow_model_optimization")
log = logging.getLogger(__name__)


def code_hash(root: Path) -> str:
    """The identity of a worker: the interpreter, the project, and every file of its code."""
    digest = hashlib.sha256(f"{sys.executable}\0{root.resolve()}\0"
                            f"{os.environ.get('PYTHONPATH', '')}".encode())
    for path in sorted([*root.joinpath("pipeline").rglob("*.py"),
                        *root.joinpath("stages").glob("*.py")]):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:20]


def socket_path(root: Path) -> Path:
    folder = Path(tempfile.gettempdir()) / f"tflite-lab-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / f"{code_hash(root)}.sock"


# --- the stage's side ----------------------------------------------------------------------


def _connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        return sock
    except OSError:
        sock.close()
        return None


def _start(path: Path, root: Path) -> socket.socket | None:
    """Start a worker for `path` and wait until it listens; None if it does not."""
    lock = path.with_suffix(".lock")
    with open(lock, "w") as guard:  # one stage starts it; the others wait for it
        import fcntl

        fcntl.flock(guard, fcntl.LOCK_EX)
        sock = _connect(path)
        if sock:
            return sock
        with open(path.with_suffix(".log"), "a") as out:
            subprocess.Popen([sys.executable, "-m", "pipeline.worker", "serve", "--socket",
                              str(path), "--root", str(root)],
                             stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                             start_new_session=True, env={**os.environ, ENV_SWITCH: "0"})
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            sock = _connect(path)
            if sock:
                return sock
            time.sleep(0.1)
    return None


def _lines(sock: socket.socket) -> Any:
    buf = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield json.loads(line)


def run_stage(root: Path) -> int | None:
    """Run this process's stage (its `sys.argv`) in the warm worker of `root`.

    Returns:
        The stage's exit code, or None to run it here instead (no worker wanted, or none
        could be reached or started).
    """
    if os.environ.get(ENV_SWITCH) == "0" or os.environ.get(ENV_CHILD):
        return None
    try:
        path = socket_path(root)
        sock = _connect(path) or _start(path, root)
    except OSError:
        return None
    if sock is None:
        return None
    request = {"argv": [os.path.abspath(sys.argv[0]), *sys.argv[1:]], "cwd": os.getcwd(),
               "env": dict(os.environ)}
    with sock:
        sys.stdout.flush()
        sys.stderr.flush()
        socket.send_fds(sock, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
        child: dict[str, int] = {}

        def relay(signum: int, frame: Any) -> None:  # Ctrl-C / SIGTERM reach the stage
            if "pid" in child:
                os.kill(child["pid"], signum)

        previous = {s: signal.signal(s, relay) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for message in _lines(sock):
                if "pid" in message:
                    child["pid"] = message["pid"]
                if "exit" in message:
                    return int(message["exit"])
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    print("error: the warm worker stopped answering; run again, or set LAB_WORKER=0",
          file=sys.stderr)
    return 1


# --- the worker's side -----------------------------------------------------------------------


def _child(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked process: become the stage, run it, exit with its code."""
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = os.fdopen(0, "r", closefd=False)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    logging.root.handlers.clear()  # the stage configures its own (to its own stderr)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"], **{ENV_CHILD: "1"})
    sys.argv = list(request["argv"])
    sys.path.insert(0, os.path.dirname(sys.argv[0]))  # as `python stages/<stage>.py` would
    code = 0
    try:
        import runpy

        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 (a stage's crash: print it as Python would)
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


_running: set[int] = set()  # the stages running now (forked pids): the worker is not idle


def _serve_one(conn: socket.socket) -> None:
    message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    request = json.loads(message.split(b"\n", 1)[0])
    pid = os.fork()
    if pid == 0:
        conn.close()
        _child(request, fds)
    for fd in fds:
        os.close(fd)

    def wait() -> None:
        try:
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code  # killed by a signal: as a shell says
            conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
        finally:
            conn.close()
            _running.discard(pid)

    _running.add(pid)
    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    threading.Thread(target=wait, daemon=True).start()


def serve(path: Path, root: Path) -> None:
    """Import TensorFlow, then fork one process per stage request until idle."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    sys.path.insert(0, str(root))
    from pipeline import quiet

    quiet.setup()  # inherited by every forked stage
    with quiet.native():
        for module in PRELOAD:
            __import__(module)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    server.bind(str(tmp))
    server.listen(16)
    os.replace(tmp, path)  # clients connect only once it listens
    server.settimeout(IDLE_SECONDS)
    log.info("worker %s ready (pid %d)", path.name, os.getpid())
    try:
        while True:
            try:
                conn, _ = server.accept()
            except socket.timeout:
                if _running:  # a stage longer than the idle time: still at work
                    continue
                break
            try:
                _serve_one(conn)
            except Exception:  # noqa: BLE001 (one bad request must not stop the worker)
                log.exception("request failed")
                conn.close()
    finally:
        path.unlink(missing_ok=True)
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("serve",))
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--root", required=True, type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker: %(message)s")
    serve(args.socket, args.root)


if __name__ == "__main__":
    main()
