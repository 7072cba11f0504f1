"""A fresh copy of the project to run `dvc repro` in, without touching the checkout: the
end-to-end tests (`tests/test_e2e.py` and the tests that import from it) and `make bench`'s
`pipeline` section (`tools/bench/overhead.py`) both use it.

    from tools.project import project_copy, project_env
    project = project_copy(tmp / "lab")
    subprocess.run(["dvc", "repro"], cwd=project, env=project_env(project), check=True)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What a run writes (the stages' outputs, top folders) and its lock: never copied, so the
# copy starts from nothing and `dvc repro` runs every stage.
OUTPUT_DIRS = ("data", "models", "evaluation", "benchmark", "footprint", "calibration", "reports")
LOCK = "dvc.lock"


def project_copy(dest: Path, root: Path = ROOT) -> Path:
    """Copy the project's tracked and new, not ignored, files into a fresh git repository.

    Outputs (`OUTPUT_DIRS`) and `dvc.lock` stay behind; files deleted but still tracked are
    skipped. The copy is committed once, so `dvc` and `git status` see a clean tree.

    Args:
        dest: Folder to copy into (created if missing).
        root: The project to copy, this checkout by default.

    Returns:
        `dest`.
    """
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=root, check=True, capture_output=True, text=True).stdout.split()
    for rel in files:
        if rel == LOCK or rel.split("/")[0] in OUTPUT_DIRS or not (root / rel).is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dest / rel)
    for args in (["init", "-q"], ["add", "-A"],
                 ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"]):
        subprocess.run(["git", *args], cwd=dest, check=True)
    return dest


def project_env(project: Path, tracking_uri: str | None = None) -> dict[str, str]:
    """The environment to run `dvc` (and so the copy's stages) in.

    Args:
        project: The copy; its own `pipeline/` is imported, not the installed checkout's.
        tracking_uri: An MLflow tracking URI; without it, the copy's own default store.

    Returns:
        This process's environment with this interpreter's folder first on `PATH`.
    """
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(project))  # the copy's own pipeline/, not the installed checkout
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's own default store ...
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri  # ... unless a server is given
    return env
