"""Metrics are declared once (`pipeline.metrics`): the summary, the report, MLflow and the docs
read the declarations. Real stage results of the tiny model (tests/conftest.py); the
end-to-end test checks the same on a whole `dvc repro` with the device tools."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import ROOT
from pipeline import dvcfile, metrics
from pipeline.config import Config
from pipeline.report import content, summary
from pipeline.tracking import models, store, sweep


@pytest.fixture(scope="module")
def rows(stage_results: dict[str, dict[str, Any]], tiny_cfg: Config) -> dict[str, Any]:
    return summary.summarize(tiny_cfg.variants, stage_results["records"],
                             stage_results["evaluations"], stage_results["benchmarks"],
                             "float32", 0.01)


def test_every_metric_a_row_carries_is_declared(rows: dict[str, Any]) -> None:
    for name, row in rows.items():
        assert summary.undeclared(row) == [], name
        # every stage's metrics but the footprint's: its tools did not run here
        assert set(metrics.every_variant([s for s in metrics.STAGES if s != "footprint"])) \
            <= set(row), name
    # a typo in a measuring stage's key is caught, not shown as an empty column
    assert summary.undeclared({"latency_ms_p5O": 1.0, "status": "ok"}) == ["latency_ms_p5O"]


def test_a_new_metric_needs_only_its_declaration_and_its_measure(
        stage_results: dict[str, dict[str, Any]], tiny_cfg: Config,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A benchmark figure that only its stage writes and `pipeline.metrics` declares reaches
    the row, `metrics.json`'s dict and the report's formatting with no other change."""
    new = metrics.Metric("latency_ms_p75", "75th percentile of invoke()", "benchmark", "ms",
                         metrics.LOWER)
    monkeypatch.setattr(metrics, "METRICS", (*metrics.METRICS, new))
    monkeypatch.setitem(metrics._BY_KEY, new.key, new)
    benchmarks = {v: {**b, "latency_ms_p75": 0.5} for v, b in
                  stage_results["benchmarks"].items()}
    rows = summary.summarize(tiny_cfg.variants, stage_results["records"],
                             stage_results["evaluations"], benchmarks, "float32", 0.01)
    assert summary.metrics_of(rows["int8"])["latency_ms_p75"] == 0.5
    assert metrics.fmt("latency_ms_p75", 0.5) == "500.0 us"
    assert "| `latency_ms_p75` | ms | lower | benchmark |" in metrics.docs_table()


def test_the_places_read_the_declarations() -> None:
    assert content.SUMMARY_COLUMNS == metrics.keys(metrics.SUMMARY)
    assert models.MODEL_METRICS == metrics.keys(metrics.MODEL)
    assert store.VIEW_METRICS == metrics.keys(metrics.VIEW)
    assert sweep.SEED_FIGURES == metrics.keys(metrics.SEEDS)
    assert models.TEST_SET_METRICS <= set(metrics.keys())
    # DVC's plots name columns of reports/plots/variants.csv: declared metrics
    for plot in dvcfile.PLOTS:
        if isinstance(plot, dict):
            (spec,) = plot.values()
            (path, column), = spec["y"].items()
            if path.endswith("variants.csv"):  # one row per variant (the other: epochs)
                assert metrics.declared(spec["x"]) and metrics.declared(column), spec
    # every declaration is complete and its family pattern matches an example
    assert metrics.find("t2_noxnnpack.latency_ms_p50").key == "<setting>.latency_ms_p50"
    assert metrics.find("ethos-u85-256.sram_bytes").device
    assert metrics.find("class_accuracy_11").key == "class_accuracy_<class>"
    assert metrics.find("class_accuracy_x") is None


def test_formats_and_directions_come_from_the_declaration() -> None:
    assert metrics.fmt("size_bytes", 2048) == "2.0 KiB"
    assert metrics.fmt("latency_ms_p50", 1.5) == "1.500 ms"
    assert metrics.fmt("compression_ratio", 4) == "4.00x"
    assert metrics.fmt("output_sqnr_db", 40.04) == "40.0 dB"
    assert metrics.fmt("accuracy_drop", 0.0123) == "+0.0123"
    assert metrics.fmt("accuracy", 0.98) == "0.9800"
    small = {"size_bytes": 10, "accuracy": 0.9}
    assert metrics.dominates(small, {"size_bytes": 20, "accuracy": 0.9},
                             ("size_bytes", "accuracy"))
    assert not metrics.dominates(small, {"size_bytes": 20, "accuracy": 0.95},
                                 ("size_bytes", "accuracy"))
    assert not metrics.dominates(small, small, ("size_bytes", "accuracy"))  # not strictly
    with pytest.raises(KeyError):  # a fact has no direction to compare by
        metrics.dominates({"macs": 1}, {"macs": 2}, ("micro.samples",))


def test_the_docs_table_is_the_declarations() -> None:
    page = (ROOT / "docs" / "metrics.md").read_text()
    assert page == dvcfile.metrics_docs_text(page), \
        "docs/metrics.md's table is out of date: run `make params`"
    for m in metrics.METRICS:
        assert f"| `{m.key}` |" in page
