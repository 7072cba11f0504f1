"""The report: the summary rows, the recommendation and its one candidate, the report
document rendered to Markdown and to a self-contained HTML page that renders in a real
headless Chromium (Debian's chromium; `make test` installs it when missing)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline import metrics as declared
from pipeline.config import Config
from pipeline.io import read_json, write_json
from pipeline.layout import Layout
from pipeline import plots
from pipeline.report import content, recommend, render, summary, writer
from pipeline.report.document import Document

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")

# The fixtures run every stage but the footprint (its tools are slow: test_footprint.py).
WITHOUT_FOOTPRINT = [s for s in declared.STAGES if s != "footprint"]


@pytest.fixture(scope="module")
def rows(stage_results: dict, tiny_cfg: Config) -> dict[str, dict[str, Any]]:
    return summary.summarize(tiny_cfg.variants, stage_results["records"],
                             stage_results["evaluations"], stage_results["benchmarks"],
                             "float32", 0.01)


def test_pareto_front() -> None:
    points = {"a": (1.0, 0.90), "b": (2.0, 0.95), "c": (3.0, 0.94), "d": (1.0, 0.80),
              "e": (4.0, 0.99)}
    assert plots.pareto_front(points) == ["a", "b", "e"]  # c is beaten by b, d by a
    assert plots.pareto_front({"x": (1.0, 0.5)}) == ["x"]


def test_summary_on_real_results(rows: dict, stage_results: dict, tiny_cfg: Config) -> None:
    evaluations = stage_results["evaluations"]
    assert list(rows) == list(tiny_cfg.variants)
    ref = rows["float32"]
    assert ref["accuracy_drop"] == 0 and ref["agreement"] == 1 and ref["compression_ratio"] == 1
    for name, row in rows.items():
        assert row["status"] == "ok" and set(declared.every_variant(WITHOUT_FOOTPRINT)) \
            <= set(row), name
        assert row["accuracy_drop"] == pytest.approx(ref["accuracy"] - row["accuracy"])
        assert row["compression_ratio"] == pytest.approx(ref["size_bytes"] / row["size_bytes"])
        assert row["agreement"] == evaluations[name]["agreement"]
        # Every benchmark setting's figures are metrics too, under the setting's name.
        assert row["t2.latency_ms_p50"] == row["settings"]["t2"]["latency_ms_p50"]
        assert row["class_accuracy_3"] == evaluations[name]["per_class_accuracy"][3]
        assert set(summary.metrics_of(row)) == set(summary.metrics_of(ref))


def test_summary_refuses_missing_variant_or_failed_reference(tiny_cfg: Config) -> None:
    with pytest.raises(ValueError, match="no conversion, evaluation or benchmark for variant"):
        summary.summarize(tiny_cfg.variants, {}, {}, {}, "float32", 0.01)
    failed = {v: {"status": "failed", "error": "boom"} for v in tiny_cfg.variants}
    with pytest.raises(ValueError, match="reference variant 'float32' failed.*boom"):
        summary.summarize(tiny_cfg.variants, failed, failed, failed, "float32", 0.01)


def fake_rows() -> dict[str, dict[str, Any]]:
    """Four variants where the smallest (i), the fastest (f) and the most accurate integer
    variant (j) all differ."""
    return {
        "ref": {"status": "ok", "accuracy": 0.99, "accuracy_drop": 0.0, "size_bytes": 400,
                "latency_ms_p50": 3.0, "float_compute_ops": 5},
        "f": {"status": "ok", "accuracy": 0.985, "accuracy_drop": 0.005, "size_bytes": 200,
              "latency_ms_p50": 1.0, "float_compute_ops": 5},
        "i": {"status": "ok", "accuracy": 0.983, "accuracy_drop": 0.007, "size_bytes": 30,
              "latency_ms_p50": 2.0, "float_compute_ops": 0},
        "j": {"status": "ok", "accuracy": 0.95, "accuracy_drop": 0.04, "size_bytes": 20,
              "latency_ms_p50": 2.5, "float_compute_ops": 0},
        "x": {"status": "failed", "error": "boom"},
    }


def test_recommendation_and_its_one_candidate() -> None:
    rows = fake_rows()
    rec = recommend.recommend(rows, 0.01, "smallest", "ref")
    assert (rec["smallest"], rec["fastest"], rec["candidate"]) == ("i", "f", "i")
    assert rec["misses"] == {"j": pytest.approx(0.03)} and rec["failed"] == ["x"]
    assert recommend.recommend(rows, 0.01, "fastest", "ref")["candidate"] == "f"
    # Every quantized variant misses (a tiny budget, for the test): the reference.
    none = recommend.recommend(rows, 0.001, "smallest", "ref")
    assert none["evidence"] == "reference" and none["candidate"] == "ref"
    assert "every quantized variant misses" in none["candidate_reason"]


def test_a_search_another_variant_beats_on_both_axes_is_not_recommended() -> None:
    rows = fake_rows()
    rows["auto"] = {"status": "ok", "accuracy": 0.982, "accuracy_drop": 0.008,
                    "size_bytes": 35, "latency_ms_p50": 2.0, "float_compute_ops": 0,
                    "search": {"objective": "size"}}
    rec = recommend.recommend(rows, 0.01, "smallest", "ref")
    assert rec["dominated"] == {"auto": ["i"]}  # i: smaller (30) and more accurate (0.983)
    assert rec["candidate"] == "i"
    rows["auto"]["size_bytes"] = 25  # now the smallest within the budget: not dominated
    rec = recommend.recommend(rows, 0.01, "smallest", "ref")
    assert rec["dominated"] == {} and rec["candidate"] == "auto"
    rows["auto"]["search"] = {"objective": "latency"}  # f faster, i as fast: both more accurate
    assert recommend.dominated_searches(rows) == {"auto": ["f", "i"]}


def test_the_recommendation_prefers_within_and_says_when_it_could_not() -> None:
    rows = fake_rows()
    rows["i"]["accuracy_drop_ci_high"] = 0.012  # its interval crosses the budget
    rows["f"]["accuracy_drop_ci_high"] = 0.009
    rec = recommend.recommend(rows, 0.01, "smallest", "ref")
    assert rec["evidence"] == "within" and rec["candidate"] == "f"  # i is smaller, unproven
    assert rec["verdicts"]["i"] == "unresolved"
    rows["f"]["accuracy_drop_ci_high"] = 0.011
    rec = recommend.recommend(rows, 0.01, "smallest", "ref")
    assert rec["evidence"] == "unresolved" and rec["candidate"] == "i"
    assert "unresolved" in rec["candidate_reason"]


def test_a_latency_tie_is_called_a_tie_and_broken_by_size() -> None:
    rows = fake_rows()
    # f is faster by its p50, but the intervals overlap: no measurable difference.
    rows["f"].update(latency_ms_p50_ci_low=0.8, latency_ms_p50_ci_high=2.2)
    rows["i"].update(latency_ms_p50_ci_low=1.9, latency_ms_p50_ci_high=2.1)
    rec = recommend.recommend(rows, 0.01, "fastest", "ref")
    assert rec["fastest"] == "i" and rec["fastest_tied_with"] == ["f"]  # i is smaller
    rows["i"].update(latency_ms_p50_ci_low=2.3, latency_ms_p50_ci_high=2.5)
    rec = recommend.recommend(rows, 0.01, "fastest", "ref")
    assert rec["fastest"] == "f" and rec["fastest_tied_with"] == []


def test_registry_sweep_and_hydra_app_read_the_same_candidate(tmp_path: Path,
                                                              tiny_cfg: Config) -> None:
    """prefer=fastest, where the old rules differed: the registry took the fastest, the sweep
    summary and the Hydra app the smallest. All three now read recommendation.json."""
    from mlflow.tracking import MlflowClient

    from pipeline.__main__ import candidate_accuracy
    from pipeline.tracking import sweep
    from pipeline.steps import track

    rows = fake_rows()
    rec = recommend.recommend(rows, 0.01, "fastest", "ref")
    assert rec["candidate"] == "f" and rec["smallest"] == "i"
    job = Layout(tmp_path / "sweep" / "0")
    write_json(job.report("summary.json"), rows)
    write_json(job.report("recommendation.json"), rec)
    for model in ("float", "qat"):
        write_json(job.history(model), {})
        write_json(job.keras_metrics(model), {"test_accuracy": 0.99})
    assert candidate_accuracy(job) == rows["f"]["accuracy"]
    (sweep_row,) = sweep.summarize(tmp_path / "sweep", [])
    assert sweep_row["candidate"] == "f" and sweep_row["accuracy"] == rows["f"]["accuracy"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    specs = {n: dataclasses.replace(tiny_cfg.variants["float32"], name=n) for n in rows}
    cfg = dataclasses.replace(
        tiny_cfg, tracking=dataclasses.replace(tiny_cfg.tracking, uri=uri, experiment="t",
                                               registered_model="m"),
        quantization=dataclasses.replace(tiny_cfg.quantization, variants=specs))
    params = write_json(tmp_path / "params.yaml", {})
    result = track.run(cfg, job, {}, params)
    version = MlflowClient(uri).get_model_version_by_alias("m", "candidate")
    assert version.tags["variant"] == "f" == result["candidate"]["variant"]


@pytest.fixture(scope="module")
def written(rows: dict, tiny_cfg: Config, tiny_models: dict,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    rows = {**rows, "int16x8": {"status": "failed", "error": "ValueError: no kernel\ndetails"}}
    rec = recommend.recommend(rows, 1.0, "smallest", "float32")
    histories = {"float": tiny_models["history"], "qat": tiny_models["qat_history"]}
    return writer.write_report(tmp_path_factory.mktemp("reports"), rows, tiny_cfg.variants,
                               rec, "float32", 0.9, histories)


def test_report_files_hold_every_variant(written: dict[str, Path], rows: dict,
                                         tiny_cfg: Config) -> None:
    rec = read_json(written["recommendation"])
    assert rec["smallest"] == min((n for n in rows if n != "int16x8"),
                                  key=lambda n: rows[n]["size_bytes"])
    assert rec["failed"] == ["int16x8"] and "int16x8" not in (rec["smallest"], rec["fastest"])
    metrics = read_json(written["metrics"])  # DVC metrics: the failed variant is left out
    assert set(metrics) == set(tiny_cfg.variants) - {"int16x8"}
    assert metrics["int8"] == summary.metrics_of(rows["int8"])
    md = written["markdown"].read_text()
    assert f"**Smallest: `{rec['smallest']}`**" in md and "**Evidence:**" in md
    assert f"**Candidate: `{rec['candidate']}`**" in md
    assert all(f"| `{v}` |" in md for v in tiny_cfg.variants)
    assert "`int16x8` **failed**: ValueError: no kernel" in md
    assert "## Worst-quantized layers" in md and "keeps 1 layer(s) in float" in md
    assert "## Latency per setting" in md and "| t2 p50 |" in md
    assert "## Per-class accuracy" in md
    assert "### `int16x8`\n\n```\nValueError: no kernel\ndetails\n```" in md
    lines = written["csv"].read_text().splitlines()
    header = lines[0].split(",")
    assert header[:2] == ["variant", "status"] and header[-1] == "error"
    assert set(declared.every_variant(WITHOUT_FOOTPRINT)) <= set(header)
    assert "t2.latency_ms_p99" in header
    by_variant = {line.split(",")[0]: line for line in lines[1:]}
    assert by_variant["int16x8"].startswith("int16x8,failed,")
    assert by_variant["int16x8"].endswith(",ValueError: no kernel")


def test_markdown_and_html_render_the_same_document(rows: dict, tiny_cfg: Config,
                                                    written: dict[str, Path]) -> None:
    """One document, two renderings: every cell of every table, in both."""
    rec = recommend.recommend(rows, 0.01, "smallest", "float32")
    doc: Document = content.build(rows, tiny_cfg.variants, rec, "float32", 0.9,
                                  {"Size per variant": "plots/size.png"})
    md, page = render.markdown(doc), render.page(doc, written["plots"].parent)
    from pipeline.report.document import Table

    tables = [b for s in doc.sections for b in s.blocks if isinstance(b, Table)]
    assert len(tables) >= 5
    assert md.count("\n|---") == len(tables) and page.count("<table>") == len(tables)
    for table in tables:
        for row in table.rows:
            for cell in row:
                flat = "".join(span.text for span in cell)
                if flat and "<" not in flat:
                    assert flat.replace("|", "\\|") in md.replace("`", "")
                    assert flat in re.sub(r"<[^>]+>", "", page)
    assert md.count("## ") == page.count("<h2>") + page.count("<h3>")


def test_report_writes_plots_and_their_data(written: dict[str, Path], tiny_cfg: Config) -> None:
    pngs = sorted(p.name for p in written["plots"].glob("*.png"))
    summary = json.loads(written["summary"].read_text())
    slower = [n for n, r in summary.items() if r["status"] == "ok" and r["speedup_ci_high"] < 1]
    assert pngs == sorted(["accuracy_vs_latency.png", "accuracy_vs_size.png", "size.png",
                           "training.png", *(["time_per_op_type.png"] if slower else [])])
    for png in written["plots"].glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    variants = (written["plots"] / "variants.csv").read_text().splitlines()
    assert variants[0] == "variant,accuracy,size_bytes,latency_ms_p50,pareto_size,pareto_latency"
    assert len(variants) == len(tiny_cfg.variants)  # header + every variant but the failed one
    assert any(line.split(",")[4] == "1" for line in variants[1:])  # someone is on the front
    training = (written["plots"] / "training.csv").read_text().splitlines()
    assert len(training) == 1 + 3 + 1  # header, three float epochs, one QAT epoch
    md = written["markdown"].read_text()
    assert "![Accuracy against size (bars: 95% intervals)](plots/accuracy_vs_size.png)" in md


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
    assert len(images) == len(list(written["plots"].glob("*.png")))
    assert all('data-rendered="true"' in img for img in images), images
    assert dom.count("<table") >= 4
    assert all(f"<code>{v}</code>" in dom for v in tiny_cfg.variants)
    screenshot = tmp_path / "page.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                    "--window-size=1280,1600", f"--screenshot={screenshot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert screenshot.stat().st_size > 20_000  # a real render, not a blank page


def test_a_converter_error_s_reason_keeps_the_node_and_drops_the_mlir_location() -> None:
    from pipeline.report.summary import first_line

    error = ('ConverterError: <unknown>:0: error: loc(callsite(fused["AvgPool:", '
             '"densenet121/quant_pool2_pool/AvgPool@__inference__wrapped_model_9"] at '
             'fused["StatefulPartitionedCall:", "StatefulPartitionedCall@__inference_sig_1"]'
             ')): \'tfl.average_pool_2d\' op quantization parameters violate the same scale '
             'constraint\n<unknown>:0: note: see current operation')
    assert first_line(error) == (
        "ConverterError: error: at densenet121/quant_pool2_pool/AvgPool: "
        "'tfl.average_pool_2d' op quantization parameters violate the same scale constraint")
    assert first_line("ValueError: plain (no location)\nmore") == "ValueError: plain (no location)"
    assert first_line(None) == ""


def test_the_report_says_what_a_tighter_budget_would_change() -> None:
    """The intervals of one run give every verdict at a tenth of the budget: a drop resolved
    over it misses, one whose interval crosses it is unresolved, one below it stays within."""
    rows = {"int4": {"status": "ok", "accuracy_drop": 0.0024, "accuracy_drop_ci_high": 0.0038},
            "int8": {"status": "ok", "accuracy_drop": 0.0002, "accuracy_drop_ci_high": 0.0008},
            "mixed": {"status": "ok", "accuracy_drop": 0.0009, "accuracy_drop_ci_high": 0.0019},
            "broken": {"status": "failed", "error": "x"}}
    said = content.tighter_budget(rows, 0.001)
    assert "(0.0010)" in said
    assert said.endswith("misses: int4; unresolved: mixed; within: int8"), said
