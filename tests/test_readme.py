"""Every command the README and the manual's pages (`docs/`, in `mkdocs.yml`'s nav order)
show works as written in a fresh shell, and the manual builds as a site.

The `sh` blocks of the README, then of each page, are extracted and run in order, as one
bash script, in a fresh copy
of the project, from an empty environment (`env -i` with only `HOME` and the system `PATH`),
the way a new user pastes them: `make repro`, then `source .venv/bin/activate` and the rest.
`conf/` is shrunk first (tiny model, short training, four variants), which is the edit a user
makes to their own config. The copy gets a `.venv` of its own that reuses the project's
installed packages (installing 3 GB again would test pip, not the README) and imports the
copy's own `pipeline/`, as an editable install of the copy would. Two kinds of line are not run as they stand: `make test` (this
suite itself) and lines marked `# runs until Ctrl-C`, which are started, waited for until
they answer on port 5000, and stopped. Then the results of the commands are checked.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY_OVERRIDES
from test_e2e import project_copy

SKIPPED = {"make test": "the test suite itself"}
UNTIL_CTRL_C = "# runs until Ctrl-C"
VARIANTS = ("float32", "dynamic_range", "int8", "qat_int8")  # the shrunk conf's variants
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def readme_commands(text: str) -> list[str]:
    """The commands of every ```sh block, in order; `\\`-continued lines joined."""
    commands: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        pending = ""
        for line in block.splitlines():
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            line = (pending + line).strip()
            pending = ""
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def documents() -> list[Path]:
    """The README, then every page of the manual in its nav order."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    return [ROOT / "README.md", *(ROOT / "docs" / next(iter(e.values())) for e in nav)]


def documented_commands() -> list[str]:
    return [c for path in documents()
            for c in readme_commands(path.read_text(encoding="utf-8"))]


def test_the_manual_is_a_site_with_every_page_and_the_readme_a_front_door(
        tmp_path: Path) -> None:
    """Every page under docs/ is in the nav, the site builds with no warning (a broken link
    fails it), and the README stays a front door that links every page."""
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    in_nav = {p.name for p in documents()[1:]}
    assert pages == in_nav, pages ^ in_nav
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    assert {p for p in in_nav if f"(docs/{p})" not in readme} == {"index.md"}
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "mkdocs"), "build", "--strict",
                          "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "WARNING" not in out.stderr, out.stderr[-3000:]
    for page in in_nav:
        html = tmp_path / "site" / (page.removesuffix(".md") + "/index.html"
                                    if page != "index.md" else "index.html")
        assert html.is_file(), html


def test_readme_blocks_are_found_and_every_make_target_exists() -> None:
    commands = documented_commands()
    assert commands[:2] == ["make repro   # creates .venv, installs the pinned dependencies, "
                            "runs the pipeline",
                            "make test    # creates .venv if it is missing, runs all the tests"]
    assert "source .venv/bin/activate" in commands
    assert not [c for c in commands if ".venv/bin/" in c and not c.startswith("source")]
    help_text = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout
    targets = set(re.findall(r"make ([a-z][a-z-]*)", help_text))
    text = "\n".join(p.read_text(encoding="utf-8") for p in documents())
    used = set(re.findall(r"`make ([a-z][a-z-]*)", text)) | {
        c.split()[1] for c in commands if c.startswith("make ")}
    assert used <= targets, f"the docs name make targets that do not exist: {used - targets}"


def venv_for(project: Path) -> Path:
    """`<project>/.venv`: a new venv whose packages are the project venv's, and whose
    `pipeline` is the copy's own (a path file), with the console scripts (dvc, mlflow, ...)
    rewritten to its own interpreter; marked installed, so `make` does not install again."""
    source = ROOT / ".venv"
    venv = project / ".venv"
    subprocess.run([str(source / "bin" / "python"), "-m", "venv", "--without-pip", str(venv)],
                   check=True)
    site = next((source / "lib").glob("python3.*/site-packages"))
    (next((venv / "lib").glob("python3.*")) / "site-packages" / "lab.pth").write_text(
        f"{project}\n{site}\n")
    shebang = f"#!{source / 'bin' / 'python'}"
    for script in (source / "bin").iterdir():
        target = venv / "bin" / script.name
        if script.is_file() and not target.exists():
            with script.open("rb") as f:
                if f.readline().decode(errors="replace").strip() != shebang:
                    continue
            text = script.read_text().replace(shebang, f"#!{venv / 'bin' / 'python'}", 1)
            target.write_text(text)
            target.chmod(0o755)
    (venv / ".installed").touch()
    (venv / ".installed-torch").touch()  # make test installed the torch extra too
    return venv


def shrink_conf(project: Path) -> None:
    """Write the tiny overrides into the copy's conf/ files, as a user edits their config."""
    for override in TINY_OVERRIDES:
        key, value = override.split("=", 1)
        if "." not in key:  # a group: the choice in conf/config.yaml's defaults list
            path = project / "conf" / "config.yaml"
            path.write_text(re.sub(rf"^(  - {key}: )\w+", rf"\g<1>{value}", path.read_text(),
                                   count=1, flags=re.M))
            continue
        group, field = key.split(".", 1)
        path = project / "conf" / group / ("small_cnn.yaml" if group == "model"
                                           else "default.yaml")
        cfg = yaml.safe_load(path.read_text())
        cfg[field] = yaml.safe_load(value)
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    path = project / "conf" / "quantization" / "default.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["variants"] = {v: cfg["variants"][v] for v in VARIANTS}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def script_for(commands: list[str]) -> str:
    """One bash script: each command echoed then run, stopping at the first failure."""
    lines = ["set -eo pipefail"]
    for command in commands:
        if command.split("#")[0].strip() in SKIPPED:
            lines.append(f"echo {shlex.quote('+ skipped: ' + command)}")
            continue
        lines.append(f"echo {shlex.quote('+ ' + command)}")
        lines.append('echo "@ $SECONDS s"')  # when it started: the transcript shows each one's time
        if UNTIL_CTRL_C in command:
            port = (re.findall(r"127\.0\.0\.1:(\d+)|(?:-p|--port) (\d+)", command)
                    or [("5000", "")])[0]
            port = port[0] or port[1]
            url = f"http://127.0.0.1:{port}/"
            probe = ("import sys, time, urllib.error, urllib.request\n"
                     "def up():\n"
                     "    try: urllib.request.urlopen(URL, timeout=2); return True\n"
                     "    except urllib.error.HTTPError: return True\n"
                     "    except OSError: return False\n").replace("URL", repr(url))
            # A background job of a script starts with SIGINT ignored; a terminal's would not:
            # restore it, so Ctrl-C (SIGINT) reaches the command as it would a user's.
            start = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                     "os.execvp('bash', ['bash', '-c', sys.argv[1]])")
            lines += [f"setsid python -c {shlex.quote(start)} {shlex.quote(command)} "
                      "> until_ctrl_c.log 2>&1 &",
                      "server=$!",
                      "python -c " + shlex.quote(
                          probe + "for _ in range(600):\n"
                                  "    if up(): sys.exit(0)\n"
                                  "    time.sleep(0.5)\n"
                                  f"sys.exit('no answer on {url}')")
                      + " || { cat until_ctrl_c.log; exit 1; }",
                      f"echo '  (answered on {url}; stopping it, as Ctrl-C would)'",
                      "kill -INT -- -$server",
                      "for _ in $(seq 120); do kill -0 $server 2>/dev/null || break; "
                      "sleep 0.5; done",
                      "if kill -0 $server 2>/dev/null; then echo 'still running 60 s after "
                      "Ctrl-C'; cat until_ctrl_c.log; kill -KILL -- -$server; exit 1; fi",
                      "wait $server || true",
                      "python -c " + shlex.quote(
                          probe + "for _ in range(120):\n"
                                  "    if not up(): sys.exit(0)\n"
                                  "    time.sleep(0.5)\n"
                                  f"sys.exit('{url} still answers')")]
        else:
            lines.append(command)
        if command.split("#")[0].strip() == "make repro":  # a fresh clone's first run: after
            # it, DVC agrees that nothing is left to run (no stale lock, no output changed)
            lines.append('.venv/bin/dvc status | tee dvc_status.log | grep -q "up to date" || '
                         '{ echo "dvc status right after make repro:"; cat dvc_status.log; '
                         'exit 1; }')
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_every_readme_command_works_in_a_fresh_shell(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    project = project_copy(tmp_path / "lab")
    venv = venv_for(project)
    shrink_conf(project)
    commands = documented_commands()
    home = tmp_path / "home"
    home.mkdir()
    # A user's home, with the git identity `dvc exp` needs to record experiments.
    (home / ".gitconfig").write_text("[user]\n\tname = Lab User\n\temail = user@example.com\n")
    env = {"HOME": str(home), "PATH": SYSTEM_PATH}
    proc = subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), "bash", "-c",
                           script_for(commands)], cwd=project, capture_output=True, text=True,
                          timeout=3600)
    (tmp_path / "transcript.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    ran = [line for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert proc.returncode == 0, (f"failed at: {ran[-1] if ran else '?'}\n"
                                  f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    assert len(ran) == len(commands)  # every command ran, in order
    # No stage, and no step of the Hydra app, read a key its params in dvc.yaml do not list
    # (pipeline.reads logs it; the shell's environment is the user's, so not strict here).
    assert "which dvc.yaml does not list" not in proc.stdout + proc.stderr

    # What the commands left behind.
    assert (project / "reports" / "report.html").is_file()
    assert (project / "dvc_plots" / "index.html").is_file()
    assert list((project / "candidate").rglob("*.tflite")), "the registry download is empty"
    with open(project / "params.yaml") as f:  # back to conf/ as it is, after the own-model run
        assert yaml.safe_load(f)["model"]["arch"] == "small_cnn"
    shown = subprocess.run([str(venv / "bin" / "dvc"), "exp", "show", "--json"],
                           cwd=project, capture_output=True, text=True, check=True).stdout
    experiments = [e for rev in json.loads(shown) for e in (rev.get("experiments") or [])]
    assert len(experiments) == 3  # `dvc exp run -S`, then two queued ones
    assert '"epochs": 12' in shown and '"calibration_samples": 150' in shown  # -S composed
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tflite-quantization-lab")
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    assert "RUNNING" not in {r.info.status for r in runs}
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    names = sorted(r.info.run_name for r in parents)
    assert names.count("file-digits") == 1 and names.count("small_cnn-digits") >= 4
    # docs/models.md: the trained MNIST model from ONNX and from PyTorch, on real MNIST
    assert names.count("onnx-mnist") == 1 and names.count("torch-mnist") == 1
    sweeps = [r for r in parents if r.data.tags.get("pipeline") == "hydra-sweep"]
    assert len(sweeps) == 1 and {r.info.status for r in sweeps} == {"FINISHED"}
    parallel = sweeps[0]  # the 4-job parallel sweep
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parallel.info.run_id]
    assert sorted(r.info.run_name for r in jobs) == [
        "job 0: model=small_cnn seed=1", "job 1: model=small_cnn seed=2",
        "job 2: model=tiny_cnn seed=1", "job 3: model=tiny_cnn seed=2"]
    for job in jobs:  # nothing lost, nothing written twice, by the two parallel workers
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == job.info.run_id]
        studies = [r for r in children if r.data.tags.get("study") == "calibration"]
        assert len(studies) == 1 and studies[0].info.status == "FINISHED"  # int8's study
        children = [r for r in children if r.data.tags.get("study") != "calibration"]
        assert sorted(r.data.tags["variant"] for r in children) == sorted(VARIANTS)
        assert {r.info.run_name for r in children} == {
            f"{r.data.tags['variant']} · {job.info.run_name}" for r in children}
        assert {r.info.status for r in children} == {"FINISHED"}
    summary = [a.path for a in client.list_artifacts(parallel.info.run_id, "summary")]
    assert summary == ["summary/sweep_seeds.csv", "summary/sweep_seeds.png",
                       "summary/sweep_summary.csv", "summary/sweep_summary.png"]
    seeds = list(project.glob("multirun/*/*/sweep_seeds.csv"))
    assert len(seeds) == 1  # a row per model and variant, over its 2 seeds
    lines = seeds[0].read_text().splitlines()
    assert len(lines) == 1 + 2 * len(VARIANTS) and all(",2," in line for line in lines[1:])
    server = MlflowClient(f"sqlite:///{project / 'mlflow-server.db'}")
    logged = server.search_runs(
        [server.get_experiment_by_name("tflite-quantization-lab").experiment_id])
    studied = [r for r in logged if r.data.tags.get("study") == "calibration"]
    assert len([r for r in studied if "variant" not in r.data.tags]) == 1  # and its points
    logged = [r for r in logged if r.data.tags.get("study") != "calibration"]
    assert len(logged) == 1 + len(VARIANTS)  # the forced track stage, through the server
    assert not list(project.glob(".mlflow-server-*.pid"))  # stopped
