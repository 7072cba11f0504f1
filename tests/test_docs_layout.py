"""The text that describes the code, checked against the tree as it is when the test runs:
every `pipeline/...` path and `pipeline.x.y` name in the manual, the Makefile, the package's
docstrings and comments, `tools/`, `stages/` and `hydra_plugins/` exists; the layout table
of `docs/development.md` names every folder and module of the package and nothing that is
gone; the package docstring names every subpackage; counts of stages and variants in the
manual are the default config's; `docs/variants.md`'s table lists the default variants.

Nothing here lists modules: a module moved, split or renamed makes the text that still names
the old one fail, and a new one the layout table does not name.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pipeline"

# The text that names modules and paths: the manual, the Makefile, the package (docstrings,
# comments and the code itself), the developer tools, the stage scripts, Hydra's plugins
# and the comments of conf/
TEXT_FILES = sorted([ROOT / "README.md", ROOT / "Makefile", *(ROOT / "docs").glob("*.md"),
                     *PACKAGE.rglob("*.py"), *(ROOT / "tools").rglob("*.py"),
                     *(ROOT / "stages").glob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py"),
                     *(ROOT / "conf").rglob("*.yaml")])
# `pipeline/x/y.py`, `pipeline/x/`, `tools/...`, `stages/...` (not inside a longer path)
PATH = re.compile(r"(?<![\w./-])((?:pipeline|tools|stages)/[\w./<>*{}-]*)")
# `pipeline.x.y`, `tools.x` (not an attribute of something else)
DOTTED = re.compile(r"(?<![\w./-])((?:pipeline|tools)(?:\.[\w<>{}*]+)+)")


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def is_placeholder(part: str) -> bool:
    """`<stage>`, `{name}`, `*`; and `pipeline.x.y`, how a docstring says "some module"."""
    return bool(re.search(r"[<>{}*]", part)) or len(part) == 1


def module_file(parts: list[str]) -> Path | None:
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _defined(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """Names a module or class body defines (functions, classes, assignments, imports),
    also under `if`, `try` and `with` at that level."""
    names: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        names[name.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names[(alias.asname or alias.name).split(".")[0]] = node
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for inner in getattr(node, block, []):
                    names.update(_defined(inner.body if isinstance(inner, ast.ExceptHandler)
                                          else [inner]))
    return names


@functools.cache
def defined(path: Path) -> dict[str, ast.AST]:
    return _defined(ast.parse(path.read_text()).body)


def resolve(dotted: str) -> str | None:
    """Why `dotted` (a module, or a name in one, or a member of a class in one) does not
    exist, or None if it does."""
    parts = dotted.split(".")
    if any(is_placeholder(p) for p in parts):
        return None
    for i in range(len(parts), 0, -1):
        source = module_file(parts[:i])
        if source is not None:
            break
    else:
        return f"no module {parts[0]}"
    rest, names = parts[i:], defined(source)
    for j, name in enumerate(rest):
        node = names.get(name)
        if node is None:
            owner = ".".join(parts[:i + j])
            return f"{owner} ({rel(source)}) defines no {name}"
        if not isinstance(node, ast.ClassDef):
            return None  # an attribute of a value: past what text can check
        names = _defined(node.body)
    return None


def path_exists(text: str) -> bool:
    text = text.rstrip(".")
    if re.search(r"[<>{}]", text):
        return True  # a placeholder: `stages/<stage>.py`
    if "*" in text:
        return any(ROOT.glob(text))
    return (ROOT / text).exists()


def mentions(pattern: re.Pattern[str]) -> list[tuple[str, int, str]]:
    """(file, line, match) of every match of `pattern` in the text files."""
    found = []
    for path in TEXT_FILES:
        text = path.read_text()
        for match in pattern.finditer(text):
            found.append((rel(path), text.count("\n", 0, match.start()) + 1, match.group(1)))
    return found


def test_every_named_path_exists() -> None:
    """`pipeline/x.py`, `pipeline/x/`, `tools/...` and `stages/...` in the text exist."""
    missing = [f"{f}:{line}: {p}" for f, line, p in mentions(PATH) if not path_exists(p)]
    assert not missing, "the text names paths that do not exist:\n" + "\n".join(missing)


def test_every_named_module_exists() -> None:
    """`pipeline.x.y` (a module, or a name it defines) in the text exists."""
    missing = []
    for f, line, name in mentions(DOTTED):
        why = resolve(name.rstrip("."))
        if why:
            missing.append(f"{f}:{line}: {name}: {why}")
    assert not missing, "the text names modules that do not exist:\n" + "\n".join(missing)


# --- the layout table of docs/development.md ---------------------------------------------------

def layout_rows() -> list[tuple[list[str], list[str]]]:
    """(backticked paths, backticked names in `what`) of each row of the layout table."""
    text = (ROOT / "docs" / "development.md").read_text()
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 3 or cells[1] == "path" \
                or all(re.fullmatch(r"-+", c) for c in cells):
            continue  # not a row, the header or the rule under it
        rows.append((re.findall(r"`([^`]+)`", cells[1]), re.findall(r"`([^`]+)`", cells[2])))
    assert rows, "docs/development.md: no layout table under `## Layout`"
    return rows


def subpackages() -> set[str]:
    return {p.parent.name for p in PACKAGE.glob("*/__init__.py")}


def modules(folder: Path) -> set[str]:
    """The modules of a folder (`__init__` aside) and its subpackages."""
    return ({p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
            | {p.parent.name for p in folder.glob("*/__init__.py")})


def stage_names() -> set[str]:
    return set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])


def package_rows() -> dict[Path, list[str]]:
    """For each folder of the package the table has a row for, what the rows say of it
    (`pipeline/*.py` and `pipeline/` are both the top of the package)."""
    rows: dict[Path, list[str]] = {}
    for paths, names in layout_rows():
        for path in paths:
            if path in ("pipeline/*.py", "pipeline/") or re.fullmatch(r"pipeline/\w+/", path):
                folder = PACKAGE if path in ("pipeline/*.py", "pipeline/") else ROOT / path
                rows.setdefault(folder, []).extend(names)
    return rows


def test_layout_table_paths_exist() -> None:
    missing = [p for paths, _ in layout_rows() for p in paths if not path_exists(p)]
    assert not missing, f"docs/development.md's layout table: no such path {missing}"


def test_layout_table_has_a_row_per_subpackage() -> None:
    listed = {folder.name for folder in package_rows() if folder != PACKAGE}
    assert listed == subpackages(), (
        "docs/development.md's layout table: "
        f"missing {sorted(subpackages() - listed)}, gone {sorted(listed - subpackages())}")


def test_layout_table_names_every_module_and_nothing_gone() -> None:
    """Each row of a package folder names every module in it (`name`, backticked; in
    `pipeline/steps/`, the stage modules are "one module per stage"), and every name it gives
    is a module, a subfolder or a name defined in that folder (`x/`: or a folder of the
    project)."""
    problems = []
    for folder, names in package_rows().items():
        where = rel(folder) + "/"
        own = modules(folder) - (subpackages() if folder == PACKAGE else set())
        if folder == PACKAGE / "steps":
            own -= stage_names()
        unnamed = own - set(names)
        if unnamed:
            problems.append(f"{where}: not named {sorted(unnamed)}")
        known = modules(folder) | {p.name for p in folder.iterdir() if p.is_dir()}
        for source in folder.glob("*.py"):
            known |= set(defined(source))
            for node in ast.walk(ast.parse(source.read_text())):
                if isinstance(node, ast.ClassDef):
                    known |= set(_defined(node.body))
        gone = [n for n in names
                if re.fullmatch(r"\w+", n) and n not in known
                or re.fullmatch(r"\w+/", n) and not ((folder / n).is_dir() or (ROOT / n).is_dir())]
        if gone:
            problems.append(f"{where}: names what is not there {gone}")
    assert not problems, "docs/development.md's layout table:\n" + "\n".join(problems)


def test_layout_table_names_every_tool() -> None:
    """The `tools/` row names each of its modules and folders (`x.py`, `x/`), and they exist."""
    tools = ROOT / "tools"
    names = [n for paths, row in layout_rows() if "tools/" in paths for n in row]
    own = ({p.name for p in tools.glob("*.py") if p.stem != "__init__"}
           | {f"{p.parent.name}/" for p in tools.glob("*/__init__.py")})
    unnamed = sorted(own - set(names))
    assert not unnamed, f"docs/development.md's tools/ row: not named {unnamed}"
    gone = [n for n in names if re.fullmatch(r"[\w.]+\.py|\w+/", n) and not (tools / n).exists()]
    assert not gone, f"docs/development.md's tools/ row: no such file {gone}"


def test_package_docstring_names_every_subpackage() -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text())) or ""
    unnamed = sorted(s for s in subpackages() if f"pipeline.{s}" not in doc)
    assert not unnamed, f"pipeline/__init__.py's docstring: not named {unnamed}"


# --- counts ---------------------------------------------------------------------------------------

def default_variants() -> list[str]:
    conf = yaml.safe_load((ROOT / "conf" / "quantization" / "default.yaml").read_text())
    return list(conf["variants"])


def stage_count() -> int:
    """How many stages `dvc.yaml` expands to on `params.yaml`: one per item of a `foreach`."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    count = 0
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        items = stage.get("foreach")
        assert "matrix" not in stage, f"{name}: count a matrix here"
        if isinstance(items, str):
            value = params
            for key in re.fullmatch(r"\$\{(.+)\}", items).group(1).split("."):
                value = value[key]
            items = value
        count += 1 if items is None else len(items)
    return count


def manual_text() -> dict[str, str]:
    """The manual with its lines joined (a number and its noun may be on two lines)."""
    return {rel(p): " ".join(p.read_text().split())
            for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}


@pytest.mark.parametrize("noun", ["stages", "variants"])
def test_counts_in_the_manual_are_the_default_configs(noun: str) -> None:
    """'the 53 stages', 'all 15 variants': the default params.yaml's, as dvc.yaml expands it
    and conf/quantization/default.yaml lists them."""
    expected = stage_count() if noun == "stages" else len(default_variants())
    wrong = [f"{f}: '{m.group(0)}' (the default config has {expected})"
             for f, text in manual_text().items()
             for m in re.finditer(rf"\b(?:the|all) (\d+) (?:DVC )?{noun}\b", text)
             if int(m.group(1)) != expected]
    assert not wrong, "\n".join(wrong)


def test_the_variants_table_lists_the_default_variants() -> None:
    """docs/variants.md's first table (`| name | what |`) is conf/quantization/default.yaml's
    variants, in its order."""
    text = (ROOT / "docs" / "variants.md").read_text()
    table = text.split("| name | what |", 1)[1].split("\n\n", 1)[0]
    listed = re.findall(r"^\| `(\w+)` \|", table, flags=re.MULTILINE)
    assert listed == default_variants(), (
        f"docs/variants.md's table: missing {sorted(set(default_variants()) - set(listed))}, "
        f"not a default variant {sorted(set(listed) - set(default_variants()))}, "
        "or not in conf/quantization/default.yaml's order")
