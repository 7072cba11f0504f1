"""The calibration study (`pipeline.produce.calibration`, `pipeline.report.calibration`): on a
model trained for real, every selection draws what it says from the training split only,
every point is measured, cached by content and read back, and the report says what the
study found; on the default data (MNIST), no test sample ever calibrates, by content."""

from __future__ import annotations

from pathlib import Path
import numpy as np
import pytest

from conftest import ROOT, TINY_OVERRIDES
from pipeline import config as config_mod
from pipeline import data, reads
from pipeline import params as params_mod
from pipeline.io import read_json
from pipeline.layout import CALIBRATION_ORIGINS, CALIBRATION_STUDY, Layout
from pipeline.produce import calibration
from pipeline.report import calibration as findings

ALL = "[random,balanced,one_class,confident,unconfident,misscaled]"


def _config(*overrides: str) -> config_mod.Config:
    return config_mod.parse_config(params_mod.compose([*TINY_OVERRIDES, *overrides]))


def _trained(cfg: config_mod.Config, root: Path) -> Layout:
    """The prepare and train steps, as `dvc repro` runs them, into `root`."""
    from pipeline.steps import prepare, train

    layout = Layout(root)
    prepare.run(cfg, layout)
    train.run(cfg, layout)
    return layout


def _origins(layout: Layout) -> list[np.ndarray]:
    with np.load(layout.calibration / CALIBRATION_ORIGINS) as f:
        return [f[f"point_{i}"] for i in range(len(f.files))]


@pytest.mark.slow
def test_the_study_of_a_trained_model(tmp_path: Path) -> None:
    """A tiny model trained on the digits, and its study: both quantizers' static int8, every
    selection, two sizes and two draws, the whole training split, in two worker processes
    (one test: the three parts share the trained model and its study)."""
    from pipeline.steps import calibration as step

    cfg = _config("calibration.variants=[int8_full,aeq_int8_static]",
                  f"calibration.selections={ALL}", "calibration.sizes=[1,4]",
                  "calibration.whole_split=true", "calibration.workers=2")
    layout = _trained(cfg, tmp_path / "run")
    # as its stage runs it: on a recording view of the config (sent to the worker processes),
    # reading only the keys dvc.yaml lists for it
    view, read = reads.recording(cfg)
    study = step.run(view, layout)
    reads.enforce(read, ROOT / "dvc.yaml", "calibration")
    assert "calibration.sizes" in read.keys and "calibration.workers" not in read.keys
    assert any(k.startswith("quantization.variants.int8_full.") for k in read.keys)
    studied = {"cfg": cfg, "layout": layout, "study": study}
    draws_are_what_they_say(studied)
    the_report_says_how_many_samples_and_whether_the_pipelines_are_enough(studied, tmp_path)
    points_are_cached_by_content_and_a_new_size_computes_only_its_own(studied)


def draws_are_what_they_say(studied: dict) -> None:
    cfg, layout, study = studied["cfg"], studied["layout"], studied["study"]
    ds = data.load(layout.dataset)
    where = data.origins(layout.dataset)
    n = len(ds.y_train)
    points = study["points"]
    # 2 variants x (4 seeded selections x 3 sizes (1, 4 and the pipeline's 16) x 2 draws
    # + 2 one-draw selections x 3 sizes) + the whole split once each
    assert len(points) == 2 * (4 * 3 * 2 + 2 * 3) + 2
    assert study == read_json(layout.calibration / CALIBRATION_STUDY)
    assert all(p["status"] == "ok" for p in points), [p.get("error") for p in points]
    position = {int(o): i for i, o in enumerate(where["train"])}
    for p, origins in zip(points, _origins(layout)):
        # from the training split only: never a validation or test sample
        assert set(origins.tolist()) <= set(where["train"].tolist())
        assert not set(origins.tolist()) & (set(where["test"].tolist()) | set(
            where["val"].tolist()))
        rows = np.array([position[int(o)] for o in origins])
        labels = ds.y_train[rows]
        assert len(rows) == p["train_samples"] == (n if p["whole"] else p["size"])
        if p["selection"] == "balanced":
            counts = np.bincount(labels, minlength=ds.num_classes)
            assert counts.max() - counts.min() <= 1
        if p["selection"] == "one_class":
            assert len(set(labels.tolist())) == 1
        if p["selection"] in ("random", "misscaled") and not p["whole"]:
            # draw d is the pipeline's own draw with seed + d (the quantize step's at d = 0)
            expected = data.calibration_indices(n, p["size"], cfg.seed + p["draw"])
            assert rows.tolist() == expected.tolist()
        assert 0 <= p["agreement"] <= 1 and p["accuracy_ci_low"] <= p["accuracy"]
        assert p["ranges"] and all(lo < hi for lo, hi in p["ranges"].values())
        assert p["worst_layer"] and p["worst_layer_snr_db"] < 200
    # one class per draw, a different one for each draw
    one = [p for p in points if p["selection"] == "one_class" and p["size"] == 4
           and p["variant"] == "int8_full"]
    classes = [set(ds.y_train[[position[int(o)] for o in _origins(layout)[points.index(p)]]])
               for p in one]
    assert classes[0] != classes[1]
    # the float model's most and least confident samples
    from pipeline.produce import model_store

    setting = calibration.Setting(layout.dataset, layout.keras("float"),
                                  model_store.float_tflite(layout.keras("float")), {}, 255.0, 0)
    _, confidence, _ = calibration.float_model(setting)
    top = calibration.indices("confident", 4, 0, cfg.seed, ds.y_train, confidence)
    low = calibration.indices("unconfident", 4, 0, cfg.seed, ds.y_train, confidence)
    rest = np.setdiff1d(np.arange(n), top)
    assert confidence[top].min() >= confidence[rest].max()
    assert confidence[low].max() <= np.setdiff1d(confidence, confidence[low]).min()
    # What a trained model shows: inputs 255 times too large ruin the int8 model, beyond the
    # intervals of the draws of the right range; the float model's accuracy is the study's
    by = {(p["variant"], p["selection"], p["size"], p["draw"]): p for p in points
          if not p["whole"]}
    for v in ("int8_full", "aeq_int8_static"):
        for d in (0, 1):
            assert by[v, "misscaled", 16, d]["accuracy_ci_high"] < \
                by[v, "random", 16, d]["accuracy_ci_low"]
    assert study["float"]["accuracy"] > 0.5 and study["main_size"] == 16


def points_are_cached_by_content_and_a_new_size_computes_only_its_own(studied: dict) -> None:
    from pipeline.steps import calibration as step

    cfg, layout, study = studied["cfg"], studied["layout"], studied["study"]
    again = step.run(cfg, layout)
    assert again["cached"] == len(study["points"])  # nothing measured again
    strip = [{k: v for k, v in p.items() if k != "seconds"} for p in study["points"]]
    assert [{k: v for k, v in p.items() if k != "seconds"} for p in again["points"]] == strip
    wider = _config("calibration.variants=[int8_full,aeq_int8_static]",
                    f"calibration.selections={ALL}", "calibration.sizes=[1,4,8]",
                    "calibration.whole_split=true", "calibration.workers=1")
    grown = step.run(wider, layout)
    new = [p for p in grown["points"] if p["size"] == 8]
    assert len(new) == 2 * (4 * 2 + 2) and grown["cached"] == len(study["points"])
    # another misscale is another point: the misscaled ones are measured again
    rescaled = _config("calibration.variants=[aeq_int8_static]", "calibration.misscale=2.0",
                       "calibration.selections=[random,misscaled]", "calibration.sizes=[1]",
                       "calibration.whole_split=false", "calibration.workers=1")
    third = step.run(rescaled, layout)
    assert third["cached"] == 4 and len(third["points"]) == 8  # the random draws only


def the_report_says_how_many_samples_and_whether_the_pipelines_are_enough(
        studied: dict, tmp_path: Path) -> None:
    from pipeline.report.writer import calibration_plot

    study = studied["study"]
    summary = findings.summarize(study, 0.05, 0.1)
    for variant, s in summary["variants"].items():
        assert set(s["curves"]) == set(calibration.SELECTIONS)
        assert s["smallest_within"]["misscaled"] is None  # never within 5 points
        sentence = findings.sentence(variant, s, summary)
        assert sentence.startswith(f"{variant}: ") and "Mis-scaled inputs (x255)" in sentence
        # the size the pipeline calibrates with was measured: enough or not, it is said
        assert s["main_enough"] is not None and "The pipeline's 16 samples are" in sentence
        random = s["curves"]["random"]
        assert [r["size"] for r in random] == [1, 4, 16, len(data.load(
            studied["layout"].dataset).y_train)]
        assert random[0]["spread"] > 0  # one sample's ranges move between draws
    # a budget nothing meets: the pipeline's size is not enough, and the recommendation says so
    strict = findings.summarize(study, -1.0, 0.1)
    warnings = findings.warnings(strict)
    assert len(warnings) == 2 and all("are not enough for" in w for w in warnings)
    assert all(s["smallest_within"]["random"] is None for s in strict["variants"].values())
    loose = findings.summarize(study, 1.0, 0.1)  # everything is within: the smallest size
    assert {s["smallest_within"]["random"] for s in loose["variants"].values()} == {1}
    assert not findings.warnings(loose)
    section = findings.section(summary, {"Calibration: x": "plots/calibration.png"})
    assert section is not None and len(section.blocks) == 4
    [png] = calibration_plot(summary, tmp_path).values()
    assert png.stat().st_size > 10_000


@pytest.mark.slow
def test_no_test_sample_ever_calibrates_on_the_default_data(tmp_path: Path) -> None:
    """MNIST as the lab prepares it by default, a model trained on it, the study with every
    selection and the whole training split: the samples each point calibrated on, read back
    by their positions, are none of the test split's images (by content)."""
    from pipeline.steps import calibration as step

    cfg = _config("data=mnist", "train.epochs=1", "train.batch_size=256",
                  "calibration.variants=[aeq_int8_static]", f"calibration.selections={ALL}",
                  "calibration.sizes=[1,256]", "calibration.whole_split=true",
                  "calibration.workers=1", "quantization.calibration_samples=16")
    layout = _trained(cfg, tmp_path)
    study = step.run(cfg, layout)
    assert study["train_size"] > 50_000  # the default data, whole
    where = data.origins(layout.dataset)
    raw_train = np.load(layout.dataset / "x_train.npy", mmap_mode="r")
    raw_test = np.load(layout.dataset / "x_test.npy", mmap_mode="r")
    test_images = {bytes(row) for row in np.asarray(raw_test).reshape(len(raw_test), -1)}
    position = {int(o): i for i, o in enumerate(where["train"])}
    seen = set()
    for p, origins in zip(study["points"], _origins(layout)):
        assert p["status"] == "ok", p.get("error")
        rows = np.array([position[int(o)] for o in origins])  # KeyError: not a training sample
        images = np.asarray(raw_train[np.sort(rows)]).reshape(len(rows), -1)
        assert not {bytes(r) for r in images} & test_images, p["name"]
        seen.update(rows.tolist())
    assert len(seen) == study["train_size"]  # the whole split was among them, and none else


def test_a_variant_whose_points_all_failed_is_said_so() -> None:
    """A studied variant this model cannot make (the TFLite converter's, for a model from
    PyTorch): every point failed, and the report says why instead of breaking."""
    from pipeline.report import calibration as findings

    reason = "ModelUnavailable: the float model came from PyTorch"
    ok = {"status": "ok", "accuracy": 0.9, "accuracy_ci_low": 0.85, "accuracy_ci_high": 0.94,
          "agreement": 0.95, "ranges": {}, "whole": False}
    points = [{"variant": v, "selection": sel, "train_samples": n, "draw": d, "whole": False,
               **({"status": "failed", "error": reason} if v == "int8" else ok)}
              for v in ("int8", "pt2e_int8_static") for sel in ("random", "misscaled")
              for n in (4, 16) for d in (0, 1)]
    study = {"float": {"accuracy": 0.9, "accuracy_ci_low": 0.85, "accuracy_ci_high": 0.94},
             "main_size": 16, "misscale": 255.0, "points": points}
    summary = findings.summarize(study, 0.01, 0.1)
    assert summary["variants"]["int8"]["failed"] == reason
    assert summary["variants"]["pt2e_int8_static"]["failed"] is None
    assert findings.sentence("int8", summary["variants"]["int8"], summary) == (
        f"int8: every point of the study failed ({reason}).")
    assert "4 random samples reach" in findings.sentence(
        "pt2e_int8_static", summary["variants"]["pt2e_int8_static"], summary)
    assert findings.section(summary) is not None
    assert findings.warnings(summary) == []  # nothing to say of a size that never ran
