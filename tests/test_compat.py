"""`make compat` keeps its rows in a JSON file: a rerun of some architectures (`--only`)
replaces their rows and keeps the others, and the page says what has not run yet."""

from tools import compat


def _row(arch, status="ok", commit="abc1234"):
    variant = {"status": status, "error": None if status == "ok" else "RuntimeError: no | op",
               "accuracy_drop": 0.01 if status == "ok" else None,
               "compression_ratio": 3.52 if status == "ok" else None}
    return {"arch": arch, "commit": commit, "date": "2026-11-26", "seconds": 100.4,
            "export": compat.EXPORT,
            "conversion_seconds": 50.6, "variants": {"int8": variant, "float32": variant},
            "qat": {"coverage": {"mode": "partial", "annotated_layers": 3, "layers": 4,
                                 "coverage": 0.5}, "error": None}}


def test_merge_replaces_the_rerun_architecture_and_keeps_the_others_in_matrix_order():
    old = [_row("ResNet50"), _row("MobileNet", commit="old0000")]
    merged = compat.merge(old, [_row("MobileNet", status="failed", commit="new1111")])
    assert [r["arch"] for r in merged] == ["MobileNet", "ResNet50"]
    assert merged[0]["commit"] == "new1111"
    assert compat.merge([], [_row("custom")])[0]["arch"] == "custom"


def test_render_names_failures_crashes_and_what_has_not_run():
    rows = [_row("MobileNet"), _row("ResNet50", status="failed"),
            {"arch": "DenseNet121", "commit": None, "date": "2026-11-25",
             "crash": "exit 1: boom"}]
    page = compat.render(compat.merge([], rows))
    lines = {line.split(" | ")[0]: line for line in page.splitlines() if line.startswith("| ")}
    assert lines["| MobileNet"].startswith(
        "| MobileNet | *random weights* | ok +0.010, 3.5x | ok +0.010, 3.5x |")
    assert "failed: RuntimeError: no / op" in lines["| ResNet50"]  # a pipe would split the cell
    assert "partial: 3/4 layers, 50.0% of weights | 51 | 100 |" in lines["| ResNet50"]
    assert "**crash**: exit 1: boom" in lines["| DenseNet121"]
    assert "3 architectures, 1 crashes (DenseNet121)." in page
    missing = [a for a in compat.ARCHITECTURES if a not in ("MobileNet", "ResNet50",
                                                            "DenseNet121")]
    assert f"Not run yet: {', '.join(missing)}" in page
    assert "2026-11-25 (commit not recorded); 2026-11-26 at abc1234" in page
    assert "\\* Measured before" not in page
    full = compat.render([_row(a) for a in compat.ARCHITECTURES])
    assert "Not run yet" not in full and f"{len(compat.ARCHITECTURES)} architectures, 0" in full


def test_rows_measured_with_the_old_export_are_marked() -> None:
    old = {k: v for k, v in _row("MobileNet").items() if k != "export"}
    page = compat.render([old, _row("ResNet50")])
    assert "| 51\\* | 100\\* |" in page.split("| MobileNet |")[1].splitlines()[0]
    assert "| 51 | 100 |" in page.split("| ResNet50 |")[1].splitlines()[0]
    assert "\\* Measured before the variants were converted from a SavedModel of the forward" \
        in page


def _trained(arch: str, float_accuracy: float) -> dict:
    row = _row(arch)
    for v in row["variants"].values():
        v.update(accuracy_drop_ci_low=-0.004, accuracy_drop_ci_high=0.021,
                 budget_verdict="unresolved")
    return {**row, "float_accuracy": float_accuracy}


def test_trained_rows_carry_the_interval_the_verdict_and_whether_the_model_learned() -> None:
    page = compat.render([_trained("MobileNet", 0.962), _trained("ResNet50", 0.113)])
    mobilenet = page.split("| MobileNet |")[1].splitlines()[0]
    assert mobilenet.startswith(" 0.962 | ok +0.010 [-0.004, +0.021] unresolved, 3.5x |")
    resnet = page.split("| ResNet50 |")[1].splitlines()[0]
    assert resnet.startswith(" **did not learn** (0.113): its drops say nothing |")


def test_the_matrix_trains_on_real_mnist_digits(tmp_path) -> None:
    import numpy as np

    path = compat.mnist32(tmp_path / "m.npz", train=200, test=50)
    with np.load(path) as f:
        assert f["x_train"].shape == (200, 32, 32, 3) and f["x_test"].shape == (50, 32, 32, 3)
        assert f["x_train"].dtype == np.uint8 and f["x_train"].max() == 255
        assert (f["x_train"][:, :2] == 0).all()  # padded, not stretched
        assert len(np.unique(f["y_train"])) == 10
