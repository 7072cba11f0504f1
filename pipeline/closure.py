"""A script's import closure within the project: every project file running it can import,
found by reading the code (function-level imports included), plus the data files those
modules read. `dvc.yaml`'s code dependencies of each stage (`pipeline.dvcfile`) and the
calibration study's cache key (`pipeline.produce.calibration`) are made from it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "pipeline"
# Files a module reads at run time besides Python code (module -> files or folders).
DATA_FILES = {"pipeline/report/render.py": ("pipeline/report/templates",),
              "pipeline/tracking/models.py": ("pipeline/tracking/tflite_pyfunc.py",),
              "pipeline/ship/package.py": ("pipeline/ship/files",),
              "pipeline/ship/csource.py": ("pipeline/ship/tflm_ops.json",),
              # the models it may be given (model.path=pipeline/zoo/..., pipeline.zoo:...)
              "pipeline/produce/intake.py": ("pipeline/zoo",)}


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of a project module (`pipeline.x.y`), or None if it is not one."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(path: Path, module: str | None) -> set[str]:
    """Project modules a file imports, anywhere in it (function-level imports included)."""
    found: set[str] = set()
    package = module.rpartition(".")[0] if module and path.name != "__init__.py" else module
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parts = (package or "").split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(p for p in [*parts, base] if p)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if module_file(m) is not None}


def _with_parents(module: str) -> list[str]:
    """`a.b.c` -> `a`, `a.b`, `a.b.c`: importing a module runs its packages' `__init__`."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def closure(script: Path, root: Path = ROOT) -> list[Path]:
    """Every project file that running `script` can import (its own file first), plus the
    data files those modules read (`DATA_FILES`), relative to `root`."""
    seen: set[str] = set()
    todo = sorted(_imported(script, None))
    while todo:
        module = todo.pop()
        for m in _with_parents(module):
            if m in seen:
                continue
            seen.add(m)
            path = module_file(m, root)
            if path is not None:
                todo.extend(sorted(_imported(path, m) - seen))
    files = sorted(f.relative_to(root) for m in seen if (f := module_file(m, root)))
    data = sorted(Path(d) for f in files for d in DATA_FILES.get(f.as_posix(), ()))
    return [script.relative_to(root), *files, *data]
