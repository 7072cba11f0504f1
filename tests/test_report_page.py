"""The report: Pareto fronts, plots, and a self-contained HTML page that renders in a real
headless Chromium (Debian's chromium; `make test` installs it when missing)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline import plots, report
from pipeline.config import Config

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")


def test_pareto_front() -> None:
    points = {"a": (1.0, 0.90), "b": (2.0, 0.95), "c": (3.0, 0.94), "d": (1.0, 0.80),
              "e": (4.0, 0.99)}
    assert plots.pareto_front(points) == ["a", "b", "e"]  # c is beaten by b, d by a
    assert plots.pareto_front({"x": (1.0, 0.5)}) == ["x"]


def test_candidate_is_the_recommendation_or_the_best_integer_variant() -> None:
    rows = {"f": {"status": "ok", "accuracy": 0.99, "size_bytes": 100, "float_compute_ops": 5},
            "i": {"status": "ok", "accuracy": 0.95, "size_bytes": 30, "float_compute_ops": 0},
            "j": {"status": "ok", "accuracy": 0.95, "size_bytes": 20, "float_compute_ops": 0},
            "x": {"status": "failed", "error": "boom"}}
    assert report.candidate(rows, {"smallest": "i", "fastest": "f"}) == "i"
    assert report.candidate(rows, {"smallest": "i", "fastest": "f"}, "fastest") == "f"
    # Nothing within budget: the most accurate integer variant, the smaller on a tie.
    assert report.candidate(rows, {"smallest": None, "fastest": None}) == "j"
    assert report.candidate({"f": rows["f"]}, {"smallest": None}) is None


@pytest.fixture(scope="module")
def written(stage_results: dict, tiny_cfg: Config, tiny_models: dict,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    rows = report.summarize(tiny_cfg.variants, stage_results["records"],
                            stage_results["evaluations"], stage_results["benchmarks"],
                            "float32")
    rec = report.recommend(rows, 0.01)
    histories = {"float": tiny_models["history"], "qat": tiny_models["qat_history"]}
    return report.write_report(tmp_path_factory.mktemp("reports"), rows, tiny_cfg.variants,
                               rec, 0.9, histories)


def test_report_writes_plots_and_their_data(written: dict[str, Path], tiny_cfg: Config) -> None:
    pngs = sorted(p.name for p in written["plots"].glob("*.png"))
    assert pngs == ["accuracy_vs_latency.png", "accuracy_vs_size.png", "size.png",
                    "training.png"]
    for png in written["plots"].glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    variants = (written["plots"] / "variants.csv").read_text().splitlines()
    assert variants[0] == "variant,accuracy,size_bytes,latency_ms_p50,pareto_size,pareto_latency"
    assert len(variants) == 1 + len(tiny_cfg.variants)
    assert any(line.split(",")[4] == "1" for line in variants[1:])  # someone is on the front
    training = (written["plots"] / "training.csv").read_text().splitlines()
    assert len(training) == 1 + 3 + 1  # header, three float epochs, one QAT epoch
    md = written["markdown"].read_text()
    assert "![Accuracy against size](plots/accuracy_vs_size.png)" in md


def test_report_page_renders_in_headless_chromium(written: dict[str, Path],
                                                  tmp_path: Path, tiny_cfg: Config) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed: `apt-get install chromium` (make test does)"
    page = written["html"]
    assert "src=\"plots/" not in page.read_text()  # images are inlined: one file to share
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True).stdout
    assert 'data-ready="true"' in dom, "the page's load event never ran"
    images = re.findall(r"<img[^>]*>", dom)
    assert len(images) == 4
    assert all('data-rendered="true"' in img for img in images), images
    assert dom.count("<table") >= 4
    assert all(f"<code>{v}</code>" in dom for v in tiny_cfg.variants)
    screenshot = tmp_path / "page.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                    "--window-size=1280,1600", f"--screenshot={screenshot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert screenshot.stat().st_size > 20_000  # a real render, not a blank page
