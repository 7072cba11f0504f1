"""What the report says, built once as a `Document` (`pipeline.report.document`): the
recommendation first, then the tables, plots and evidence. Rendering is elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline import metrics, stats
from pipeline.metrics import fmt
from pipeline.measure.evaluate import SQNR_CAP_DB
from pipeline.report.document import (ci, Block, Bullets, Code, Document, Figure, Paragraph,
                                      Section, Table, Text, code, strong, text)
from pipeline.report import calibration as calibration_section, device, production
from pipeline.report import latency as time_section
from pipeline.report.summary import first_line
from pipeline.variants import VariantSpec

TITLE = "Quantization report"
DEVICE_PLOT = "Device: "  # caption prefix of the device plots (pipeline.report.writer)
MAX_CLASS_COLUMNS = 20  # above this, per-class accuracy stays in the JSON files


def _latency_ci(row: Mapping[str, Any]) -> str:
    return _cell("latency_ms_p50", row)


def too_small_warning(rows: Mapping[str, Mapping[str, Any]], reference: str,
                      budget: float) -> Text | None:
    """A warning when even a variant that agrees with the reference on every test sample
    could not be shown within the budget on this test split."""
    ref = rows[reference]
    n = sum(ref["paired"].values())
    perfect = stats.Paired(both=ref["paired"]["both"] + ref["paired"]["only_reference"],
                           only_reference=0, only_variant=0,
                           neither=ref["paired"]["neither"] + ref["paired"]["only_variant"])
    if stats.drop_interval(perfect)[1] <= budget:
        return None
    needed = stats.samples_to_resolve(perfect, budget)
    return text(strong("The test split is too small for the budget: "),
                f"with {n} test samples, even a variant that agrees with the reference on "
                f"every sample cannot be shown within a drop of {budget:.4f} (the upper bound "
                "of its 95% interval is above it)"
                + (f"; that takes about {needed:,} samples." if needed else "."))


def conversion_line(intake: Mapping[str, Any]) -> str:
    """One line on a model from another framework: what converted it, its fidelity against
    the original runtime, and what it was fed (`pipeline.produce.intake`)."""
    fid = intake["fidelity"]
    source = {"onnx": f"ONNX (opset {intake.get('opset')})", "torch": "PyTorch"}.get(
        intake["format"], intake["format"])
    return (f"{source} model converted by {intake['converter']}; against "
            f"{intake['runtime']} on the {fid['samples']:,} test samples, the converted float "
            f"model's outputs differ by at most {fid['max_abs_diff']:.3g} and its top-1 agrees "
            f"on {fid['agreement']:.2%} (every variant starts from it). Fed: {intake['fed']} "
            "(data.scale / data.offset / data.normalize; the same for calibration, "
            "evaluation and the device).")


def _data_facts(facts: Mapping[str, Any], reference: str) -> list[Block]:
    """What the numbers were measured against: the inputs' range, and the labels."""
    blocks: list[Block] = []
    if facts.get("labels") == "model":
        blocks.append(Paragraph(text(
            strong("No accuracy was measured. "), code("evaluate.labels: model"),
            ": the test split's labels are the reference ", code(reference), "'s own top-1 "
            "predictions, so every \"accuracy\" in this report is a variant's top-1 agreement "
            "with the reference (which scores 1.0), every \"drop\" its disagreement, and the "
            "budget applies to that. Output SQNR and KL divergence against the reference say "
            "how far the scores moved.")))
    if facts.get("intake"):
        blocks.append(Paragraph(text(strong("Conversion: "), conversion_line(facts["intake"]))))
    if facts.get("inputs") and not facts.get("intake"):
        blocks.append(Paragraph(text(strong("Inputs: "), facts["inputs"],
                                     " (data.scale / data.offset / data.normalize; the same "
                                     "for training, calibration, evaluation and the device).")))
    return blocks


def _recommendation(rows: Mapping[str, Mapping[str, Any]], rec: Mapping[str, Any],
                    keras_accuracy: float | None, reference: str,
                    facts: Mapping[str, Any] | None = None) -> Section:
    budget = rec["max_accuracy_drop"]
    evidence = rec["evidence"]
    s, f = rec["smallest"], rec["fastest"]
    blocks: list[Block] = [*_data_facts(facts or {}, reference), Paragraph(text(
        f"Accuracy budget: a drop of at most {budget:.4f} against the reference ",
        code(reference), ". Each drop is measured on the same test samples as the "
        "reference's, with a 95% interval; a variant is ", strong("within"),
        " the budget when even the interval's upper bound is, ", strong("unresolved"),
        " when only the drop itself is, and ", strong("misses"), " it otherwise."))]
    level = {"within": "shown within the budget",
             "unresolved": "unresolved: none is shown within the budget, so these are the "
                           "best of those whose drop is within it; more test samples would "
                           "settle them",
             "reference": "none: every quantized variant misses the budget or failed"}[evidence]
    items: list[Text] = [text(strong("Evidence: "), level, ".")]
    if evidence != "reference":
        items += [
            text(strong("Smallest: ", code(s)),
                 f", {fmt('size_bytes', rows[s]['size_bytes'])} "
                 f"({fmt('compression_ratio', rows[s]['compression_ratio'])} smaller), "
                 f"accuracy {rows[s]['accuracy']:.4f} "
                 f"{ci(rows[s]['accuracy_ci_low'], rows[s]['accuracy_ci_high'])}, drop "
                 f"{rows[s]['accuracy_drop']:+.4f} "
                 f"{ci(rows[s]['accuracy_drop_ci_low'], rows[s]['accuracy_drop_ci_high'], 4)}"),
            text(strong("Fastest: ", code(f)), f", p50 {_latency_ci(rows[f])}, accuracy "
                 f"{rows[f]['accuracy']:.4f}"
                 + (f"; no measurable difference from {', '.join(rec['fastest_tied_with'])} "
                    "(overlapping intervals), so the smallest of them"
                    if rec["fastest_tied_with"] else ""))]
    items += [text(code(n), f" misses the budget by {over:.4f}")
              for n, over in rec["misses"].items()]
    items += [text(code(n), " ", strong("failed"), f": {first_line(rows[n]['error'])}")
              for n in rec["failed"]]
    for n, better in rec.get("dominated", {}).items():
        cost = "fast" if rows[n]["search"].get("objective") == "latency" else "small"
        items.append(text(code(n), " ", strong("is dominated"), " by ",
                          *[p for i, b in enumerate(better) for p in ((", ",) if i else ())
                            + (code(b),)],
                          f" (as {cost} or more, and at least as accurate): the search found "
                          "nothing the fixed variants had not, so it is not recommended."))
    if rec.get("excluded") or rec.get("max_arena_bytes") or rec.get("max_flash_bytes"):
        items.append(text(strong("Device: "), code(rec.get("target", "cpu")),
                          f"; {len(rec.get('excluded', {}))} variant(s) excluded by it or its "
                          "budgets (see Fits on the device): ",
                          ", ".join(rec.get("excluded", {})) or "none", "."))
    items.append(text(strong("Candidate: ", code(rec["candidate"])),
                      f" ({rec['candidate_reason']}); registered as ", code("@candidate"),
                      " by the track stage; packaged for the device in ",
                      code(f"deploy/{rec['candidate']}/"), " by the export stage (C sources, "
                      "resolver, settings, io.json, predict.py, golden vectors; any other "
                      "variant: ", code("make export VARIANT=<name>"), ")."))
    items += [text(strong("Warning: "), w) for w in rec.get("warnings", [])]
    blocks.append(Bullets(tuple(items)))
    warning = too_small_warning(rows, reference, budget)
    if warning:
        blocks.append(Paragraph(warning))
    if keras_accuracy is not None:
        blocks.append(Paragraph(text(f"Float Keras model test accuracy: {keras_accuracy:.4f}")))
    return Section(text("Recommendation"), tuple(blocks))


def _evidence(rows: Mapping[str, Mapping[str, Any]], rec: Mapping[str, Any]) -> Section:
    """Each variant's drop with its interval, the McNemar p-value, the verdict and the test
    samples that would resolve it."""
    table_rows = []
    for name, row in rows.items():
        if row["status"] != "ok":
            continue
        p = row["paired"]
        needed = row.get("test_samples_to_resolve")
        table_rows.append((
            text(code(name)),
            text(f"{row['accuracy']:.4f} {ci(row['accuracy_ci_low'], row['accuracy_ci_high'])}"),
            text(f"{row['accuracy_drop']:+.4f} "
                 f"{ci(row['accuracy_drop_ci_low'], row['accuracy_drop_ci_high'], 4)}"),
            text(f"{p['only_reference']} / {p['only_variant']}"),
            text(f"{row['p_value_vs_reference']:.3g}"),
            text(strong(rec["verdicts"][name])),
            text(f"{max(0.0, row['accuracy_drop_ci_high']):.4f}"),
            text("-" if needed is None else f"{needed:,}")))
    return Section(text("Budget evidence"), (
        Paragraph(text("Accuracy with its 95% Wilson interval; drop against the reference "
                       "with Newcombe's 95% interval for paired samples; discordant pairs "
                       "(test samples only the reference gets right / only the variant "
                       "does); the exact McNemar p-value of the difference; the verdict; "
                       "the smallest budget the variant is shown within (its drop's upper "
                       "bound); and how many test samples, at these proportions, would put "
                       "the drop's interval on one side of the budget.")),
        Table(("variant", "accuracy [95% CI]", "drop [95% CI]", "discordant", "p-value",
               "verdict", "within a budget of", "test samples to resolve"),
              tuple(table_rows)),
        Paragraph(text(tighter_budget(rows, rec["max_accuracy_drop"] / 10),
                       " (", code("report.max_accuracy_drop"), " sets the budget: which "
                       "stages a new one reruns is in docs/configuration.md, \"What reruns "
                       "when a key changes\")."))))


def tighter_budget(rows: Mapping[str, Mapping[str, Any]], budget: float) -> str:
    """The verdicts the same intervals give at a tighter `budget`: which variants would
    miss it, which the test split cannot resolve, which stay within."""
    groups: dict[str, list[str]] = {"misses": [], "unresolved": [], "within": []}
    for name, row in rows.items():
        if row["status"] == "ok":
            groups[stats.verdict(row["accuracy_drop"], row["accuracy_drop_ci_high"],
                                 budget)].append(name)
    said = "; ".join(f"{v}: {', '.join(names)}" for v, names in groups.items() if names)
    return f"At a tenth of this budget ({budget:.4f}), the same intervals say: {said}"


SUMMARY_COLUMNS = metrics.keys(metrics.SUMMARY)  # the declarations say which, in order


def _cell(metric: str, row: Mapping[str, Any]) -> str:
    """A summary cell: the value, with its 95% interval where it has one."""
    value = fmt(metric, row[metric])
    interval = metrics.find(metric).interval
    if interval is not None:
        low, high, digits = interval
        value += " " + (f"[{fmt(low, row[low])}, {fmt(high, row[high])}]"
                        if metrics.find(metric).unit == "ms"
                        else ci(row[low], row[high], digits))
    return value


def _all_variants(rows: Mapping[str, Mapping[str, Any]],
                  specs: Mapping[str, VariantSpec]) -> Section:
    table_rows = []
    for name, row in rows.items():
        if row["status"] != "ok":
            cells = [text("failed")] + [text()] * (len(SUMMARY_COLUMNS) - 1) + [text()]
        else:
            cells = [text(_cell(c, row)) for c in SUMMARY_COLUMNS]
            cells.append(text(f"{row['input_dtype']}/{row['output_dtype']}"))
        table_rows.append((text(code(name)), *cells, text(specs[name].description)))
    first = next((r for r in rows.values() if r["status"] == "ok"), None)
    top_k = first["top_k"] if first else "k"
    note = (f"accuracy and top_k_accuracy (k = {top_k}) on the whole test split. "
            "agreement: share of test samples whose top-1 equals the reference's. "
            "Brackets: 95% intervals (Wilson for accuracy, Newcombe's paired interval for the "
            "drop, bootstrap over the timed runs for p50 and over the interleaved blocks for "
            "the speed-up). "
            "output_sqnr_db: signal-to-quantization-noise ratio of the dequantized outputs "
            f"against the reference's on the same inputs ({SQNR_CAP_DB:.0f} = identical). "
            "output_kl: mean KL divergence of the reference's scores from the variant's "
            "(nats; 0 = identical). "
            "latency_ms_p50 and speedup_vs_float32: the first benchmark setting. "
            "float_compute_ops: compute ops with a float activation input or output "
            "(QUANTIZE/DEQUANTIZE not counted).")
    return Section(text("All variants"), (
        Table(("variant", *SUMMARY_COLUMNS, "I/O", "what"), tuple(table_rows)),
        Paragraph(text(note))))


def _latency(ok: Mapping[str, Mapping[str, Any]]) -> Section:
    settings = list(next(iter(ok.values()))["settings"])
    header = ["variant"]
    for k in settings:
        header += [f"{k} p50", f"{k} p90", f"{k} p99", f"{k} cv", f"{k} speed-up"]
    table_rows = []
    for name, row in ok.items():
        cells: list[Text] = [text(code(name))]
        for k in settings:
            fig = row["settings"][k]
            cells += [text(fmt("latency_ms_p50", fig["latency_ms_p50"])),
                      text(fmt("latency_ms_p90", fig["latency_ms_p90"])),
                      text(fmt("latency_ms_p99", fig["latency_ms_p99"])),
                      text(f"{fig['latency_cv']:.2f}"),
                      text(fmt("speedup_vs_float32", fig["speedup_vs_float32"]))]
        table_rows.append(tuple(cells))
    return Section(text("Latency per setting"), (
        Paragraph(text("Single-sample ", code("invoke()"), " after a warm-up, over at least "
                       "the configured runs and seconds; speed-up against the reference "
                       "measured interleaved in one process. ", code("t2"), " = 2 threads; ",
                       code("_noxnnpack"), " = without the XNNPACK delegate.")),
        Table(tuple(header), tuple(table_rows))))


def _memory(ok: Mapping[str, Mapping[str, Any]]) -> Section:
    table_rows = []
    for name, row in ok.items():
        measured = "peak_rss_mb" in row
        table_rows.append((
            text(code(name)), text(f"{row['init_ms']:.2f} ms"),
            text(fmt("first_inference_ms", row["first_inference_ms"])),
            text(fmt("warmup_ms_mean", row["warmup_ms_mean"])),
            text(f"{row['peak_rss_delta_mb']:.1f} MiB" if measured else "not measured"),
            text(f"{row['peak_rss_mb']:.1f} MiB" if measured else "not measured")))
    return Section(text("Start-up and memory"), (
        Paragraph(text("Peak RSS of loading and running the model, in a fresh process, above "
                       "the interpreter library's own baseline.")),
        Table(("variant", "init", "first inference", "warm-up mean", "peak RSS (model)",
               "peak RSS (process)"), tuple(table_rows))))


def _per_class(ok: Mapping[str, Mapping[str, Any]]) -> Section:
    classes = len(next(iter(ok.values()))["per_class_accuracy"])
    if classes > MAX_CLASS_COLUMNS:
        return Section(text("Per-class accuracy"), (Paragraph(text(
            "Per-class accuracy: ", code("evaluation/<variant>/metrics.json"), ".")),))
    table_rows = tuple((text(code(name)), *(text(f"{a:.3f}") for a in row["per_class_accuracy"]))
                       for name, row in ok.items())
    return Section(text("Per-class accuracy"), (
        Paragraph(text("Confusion matrices: ", code("evaluation/<variant>/confusion_matrix.png"),
                       " (and ", code(".json"), ").")),
        Table(("variant", *map(str, range(classes))), table_rows)))


def _models(rows: Mapping[str, Mapping[str, Any]]) -> Section:
    table_rows = []
    for name, row in rows.items():
        if row["status"] == "ok":
            insp = row["inspection"]
            weights = ", ".join(f"{d} {fmt('weight_bytes', b)}"
                                for d, b in insp["weight_bytes_by_dtype"].items())
            ops = ", ".join(f"{op} {n}" for op, n in insp["ops_by_type"].items())
            table_rows.append((text(code(name)), text(weights), text(ops)))
    return Section(text("What each model is"),
                   (Table(("variant", "weights by dtype", "ops by type"), tuple(table_rows)),))


def build(rows: Mapping[str, Mapping[str, Any]], specs: Mapping[str, VariantSpec],
          rec: Mapping[str, Any], reference: str, keras_accuracy: float | None = None,
          plots: Mapping[str, str] | None = None,
          qat: Mapping[str, Any] | None = None,
          facts: Mapping[str, Any] | None = None,
          calibration: Mapping[str, Any] | None = None) -> Document:
    """The whole report.

    Args:
        rows: The summary rows (`pipeline.report.summary.summarize`).
        specs: The configured variants (for their descriptions).
        rec: The recommendation (`pipeline.report.recommend.recommend`).
        reference: The reference variant.
        keras_accuracy: The float Keras model's test accuracy, if known.
        plots: `{caption: path relative to the report folder}` of the PNGs to show.
        qat: The qat step's metrics (`test_accuracy`, `coverage` or `error`).
        facts: About the data: `inputs` (the input range, one line) and `labels`
            (`evaluate.labels`: `data`, or `model` for label-free scores).
        calibration: The calibration study's summary (`pipeline.report.calibration`).
    """
    ok = {n: r for n, r in rows.items() if r["status"] == "ok"}
    sections = [_recommendation(rows, rec, keras_accuracy, reference, facts),
                _evidence(rows, rec), _all_variants(rows, specs),
                *production.searches(rows, plots)]
    device_plots = {c.removeprefix(DEVICE_PLOT): p for c, p in (plots or {}).items()
                    if c.startswith(DEVICE_PLOT)}
    trade_offs = {c: p for c, p in (plots or {}).items()
                  if not c.startswith(("Search", DEVICE_PLOT, time_section.TIME_PLOT,
                                       calibration_section.CALIBRATION_PLOT))}
    if trade_offs:
        sections.append(Section(text("Trade-offs"), (
            Paragraph(text("Red: the Pareto front, the variants no other variant beats on both "
                           "accuracy and cost.")),
            *(Figure(caption, path) for caption, path in trade_offs.items()))))
    if ok:
        m = next(iter(ok.values()))["machine"]
        machine = Paragraph(text(f"Measured on {m['cpu']} ({m['cores']} cores), Python "
                                 f"{m['python']}, ai-edge-litert {m['ai_edge_litert']}."))
        latency = _latency(ok)
        on_device = device.section(ok, rec, device_plots)
        where = time_section.section(ok, reference, plots)
        sections += [Section(latency.title, (*latency.blocks, machine)),
                     *([where] if where else []),
                     *([on_device] if on_device else []), _memory(ok), _per_class(ok)]
        paths = device.kernel_paths(ok)
        if paths:
            sections.append(paths)
    study = calibration_section.section(calibration, plots)
    if study:
        sections.append(study)
    if qat and (qat.get("error") or qat.get("coverage")):
        sections.append(production.qat(qat))
    sections.append(_models(rows))
    worst = production.worst_layers(rows)
    if worst:
        sections.append(worst)
    adjusted = production.adjustments(rows, specs)
    if adjusted:
        sections.append(adjusted)
    quantizer = production.quantizer(rows)
    if quantizer:
        sections.append(quantizer)
    failures = [(n, r["error"]) for n, r in rows.items() if r["status"] != "ok"]
    if failures:
        sections.append(Section(text("Failed variants"), ()))
        sections += [Section(text(code(n)), (Code(error.strip()),), level=3)
                     for n, error in failures]
    return Document(TITLE, tuple(sections))
