"""What the report says, built once as a `Document` (`pipeline.report.document`): the
recommendation first, then the tables, plots and evidence. Rendering is elsewhere.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from pipeline import stats
from pipeline.measure.evaluate import SQNR_CAP_DB
from pipeline.report.document import (Block, Bullets, Code, Document, Figure, Paragraph,
                                      Section, Table, Text, code, strong, text)
from pipeline.report.recommend import on_device
from pipeline.report.summary import first_line
from pipeline.variants import VariantSpec

TITLE = "Quantization report"
DEVICE_PLOT = "Device: "  # caption prefix of the device plots (pipeline.report.writer)
MAX_CLASS_COLUMNS = 20  # above this, per-class accuracy stays in the JSON files


def fmt(metric: str, value: Any) -> str:
    """A metric's value as the report shows it (units included)."""
    if isinstance(value, str):
        return value
    if metric == "output_sqnr_db":
        return f"{value:.1f} dB"
    if metric == "output_kl":
        return f"{value:.3g}"
    if metric in ("speedup_vs_float32", "compression_ratio"):
        return f"{value:.2f}x"
    if metric.startswith(("size_bytes", "weight_bytes")):
        return f"{value / 1024:.1f} KiB"
    if metric.startswith("latency_ms"):
        return f"{value * 1000:.1f} us" if value < 1 else f"{value:.3f} ms"
    if isinstance(value, int):
        return str(value)
    if math.isfinite(value):
        return f"{value:+.4f}" if metric == "accuracy_drop" else f"{value:.4f}"
    return str(value)


def short_layer(tensor_name: str) -> str:
    """The readable head of a fused tensor name (`a/conv/Relu;a/conv/BiasAdd;...` -> first)."""
    return tensor_name.split(";")[0]


def ci(low: float, high: float, digits: int = 3) -> str:
    """An interval as the report shows it: `[0.953, 0.987]`."""
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def _latency_ci(row: Mapping[str, Any]) -> str:
    return (f"{fmt('latency_ms', row['latency_ms_p50'])} "
            f"[{fmt('latency_ms', row['latency_ms_p50_ci_low'])}, "
            f"{fmt('latency_ms', row['latency_ms_p50_ci_high'])}]")


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
    if facts.get("inputs"):
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
                      " by the track stage."))
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
                       " (", code("report.max_accuracy_drop"), " sets the budget; only the "
                       "report, the search and the tracking rerun)."))))


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


SUMMARY_COLUMNS = ("accuracy", "accuracy_drop", "agreement", "top_k_accuracy",
                   "output_sqnr_db", "output_kl", "size_bytes", "compression_ratio",
                   "latency_ms_p50", "speedup_vs_float32", "float_compute_ops")
INTERVALS = {"accuracy": ("accuracy_ci_low", "accuracy_ci_high", 3),
             "accuracy_drop": ("accuracy_drop_ci_low", "accuracy_drop_ci_high", 4),
             "speedup_vs_float32": ("speedup_ci_low", "speedup_ci_high", 2)}


def _cell(metric: str, row: Mapping[str, Any]) -> str:
    """A summary cell: the value, with its 95% interval where it has one."""
    if metric == "latency_ms_p50":
        return _latency_ci(row)
    value = fmt(metric, row[metric])
    if metric in INTERVALS:
        low, high, digits = INTERVALS[metric]
        value += " " + ci(row[low], row[high], digits)
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
            cells += [text(fmt("latency_ms", fig["latency_ms_p50"])),
                      text(fmt("latency_ms", fig["latency_ms_p90"])),
                      text(fmt("latency_ms", fig["latency_ms_p99"])),
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
            text(fmt("latency_ms", row["first_inference_ms"])),
            text(fmt("latency_ms", row["warmup_ms_mean"])),
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


def _bytes(value: int | None) -> str:
    return "-" if value is None else f"{value:,} B"


def _device(ok: Mapping[str, Mapping[str, Any]], rec: Mapping[str, Any],
            plots: Mapping[str, str]) -> Section | None:
    """What each variant costs on the device: a table for the CPU and microcontroller, one
    per NPU, the budgets and what they excluded, and the Pareto plots."""
    measured = {n: r for n, r in ok.items() if "footprint" in r}
    if not measured:
        return None
    target = rec.get("target", "cpu")
    budgets = [f"arena <= {rec['max_arena_bytes']:,} B" if rec.get("max_arena_bytes") else "",
               f"flash <= {rec['max_flash_bytes']:,} B" if rec.get("max_flash_bytes") else ""]
    budgets = [b for b in budgets if b]
    items: list[Text] = [text(strong("Target: "), code(target), "; budgets: ",
                              ", ".join(budgets) if budgets else "none", ".")]
    if rec.get("smallest_arena"):
        n = rec["smallest_arena"]
        items.append(text(strong("Smallest working memory on the target: "), code(n),
                          f", {_bytes(on_device(ok[n], target)[0])}"))
    items += [text(code(n), " ", strong("excluded"), f": {why}")
              for n, why in rec.get("excluded", {}).items()]
    items += [text(code(n), " ", strong("not measured"), f": {first_line(r['footprint_error'])}")
              for n, r in ok.items() if r.get("footprint_error")]
    micro_rows = []
    for name, row in measured.items():
        m = row["footprint"].get("micro", {})
        gpu = ("-" if "gpu_compatible" not in row else "yes" if row["gpu_compatible"]
               else f"no ({row.get('gpu_first_incompatible_op', '?')})")
        if m.get("status") == "ok":
            arena = (f"{m['arena_bytes']:,} B ({m['arena_persistent_bytes']:,} persistent + "
                     f"{m['arena_nonpersistent_bytes']:,} non-persistent)")
            smallest = _bytes(m.get("smallest_arena_bytes"))
            if "accuracy" in m:
                paths = (f"{m['accuracy']:.3f} "
                         f"{ci(row['micro.accuracy_ci_low'], row['micro.accuracy_ci_high'])}"
                         f" vs builtin {m['builtin_accuracy']:.3f}; agreement "
                         f"{m['agreement']:.3f}; "
                         + ("bit-identical" if m["bit_identical"]
                            else f"{m['differing_outputs']} outputs differ, max "
                                 f"{m['max_abs_diff']:.3g}")
                         + (" (disagree)" if m.get("disagree") else ""))
            else:
                paths = "-"
        else:
            why = (m.get("error") or "").removeprefix("TFLite Micro cannot run it: ")
            arena, smallest, paths = (f"cannot run: {first_line(why, 160)}" if m else "-"), \
                "-", "-"
        micro_rows.append((text(code(name)), text(f"{row['macs']:,}"),
                           text(_bytes(row["size_bytes"])), text(arena), text(smallest),
                           text(paths), text(gpu)))
    samples = next((r["footprint"]["micro"].get("samples") for r in measured.values()
                    if r["footprint"].get("micro", {}).get("samples")), None)
    blocks: list[Block] = [
        Bullets(tuple(items)),
        Paragraph(text(strong("CPU and microcontroller. "),
                       "MACs counted from each graph (as Arm's Vela counts them); flash: the ",
                       code(".tflite"), " file; arena: the tensor arena TensorFlow Lite for "
                       "Microcontrollers allocates (its recording allocator's figures), and the "
                       "smallest arena it runs in (bisection); TFLM accuracy on its reference "
                       f"kernels on a seeded subset of {samples or 0} test samples, against "
                       "LiteRT's built-in kernels on the same samples; GPU: LiteRT's model "
                       "analyzer.")),
        Table(("variant", "MACs", "flash", "TFLM arena", "smallest arena",
               "TFLM accuracy [95% CI]", "GPU delegate"), tuple(micro_rows))]
    targets = sorted({t for r in measured.values() for t in r.get("npu", {})})
    for t in targets:
        npu_rows, skipped = [], []
        for name, row in measured.items():
            v = row.get("npu", {}).get(t)
            if not v:
                continue
            if v["status"] == "skipped":
                skipped.append(name)
                continue
            if v["status"] != "ok":
                npu_rows.append((text(code(name)), text(f"{v['status']}: "
                                                        f"{first_line(v.get('error'), 160)}"),
                                 *(text("-") for _ in range(5))))
                continue
            cpu = ", ".join(f"{op} x{c}" for op, c in v["cpu_op_types"].items())
            npu_rows.append((
                text(code(name)), text(_bytes(v["sram_bytes"])), text(_bytes(v["flash_bytes"])),
                text(f"{v['npu_ops_share']:.1%} ({v['npu_ops']} NPU, {v['cpu_ops']} CPU"
                     + (f": {cpu}" if cpu else "") + ")"),
                text(f"{v['cycles']:,}"), text(f"{v['inference_ms']:.3f} ms"),
                text(f"{v['macs']:,}")))
        blocks += [Paragraph(text(strong(f"{t}. "), "Arm Vela's compilation of every integer "
                                  "variant (", code(f"footprint/<variant>/vela/{t}/"), " keeps "
                                  "its per-operator table and the compiled model): SRAM and "
                                  "flash it places data in, operators on the NPU, estimated "
                                  "cycles and inference time.")),
                   Table(("variant", "SRAM", "flash", "NPU ops", "cycles", "inference",
                          "MACs (Vela)"), tuple(npu_rows))]
        if skipped:
            blocks.append(Paragraph(text(
                "Not compiled (they compute in float, which Vela leaves on the CPU): ",
                *[p for i, n in enumerate(skipped) for p in ((", ",) if i else ()) + (code(n),)],
                ".")))
    blocks += [Figure(caption, path) for caption, path in plots.items()]
    return Section(text("Fits on the device"), tuple(blocks))


def _kernel_paths(ok: Mapping[str, Mapping[str, Any]]) -> Section | None:
    """Accuracy and latency on every kernel path, side by side; flagged where they differ."""
    first = next(iter(ok.values()))
    others = list(first.get("kernel_paths", {}))
    if not others:
        return None
    primary = first.get("kernels", "xnnpack")
    # The benchmark's settings with and without XNNPACK are the paths' latencies.
    setting = {"xnnpack": "t1", "builtin": "t1_noxnnpack"}
    header = ["variant", f"accuracy ({primary})"]
    header += [f"accuracy ({k})" for k in others] + [f"agreement ({k})" for k in others]
    header += [f"p50 ({k})" for k in (primary, *others) if k in setting] + ["paths"]
    table_rows = []
    for name, row in ok.items():
        paths = row.get("kernel_paths", {})
        cells = [text(code(name)), text(f"{row['accuracy']:.4f}")]
        cells += [text(f"{paths[k]['accuracy']:.4f}") if k in paths else text("-")
                  for k in others]
        cells += [text(f"{paths[k]['agreement']:.4f}") if k in paths else text("-")
                  for k in others]
        for k in (primary, *others):
            if k in setting:
                fig = row["settings"].get(setting[k])
                cells.append(text(fmt("latency_ms", fig["latency_ms_p50"]) if fig
                                  else "not measured"))
        cells.append(text(strong("disagree")) if row.get("kernel_paths_disagree")
                     else text("agree"))
        table_rows.append(tuple(cells))
    flagged = [n for n, r in ok.items() if r.get("kernel_paths_disagree")]
    blocks: list[Block] = [
        Paragraph(text("A ", code(".tflite"), " does not compute the same on every runtime "
                       "path: each variant is evaluated on each of ",
                       code("evaluate.kernel_paths"),
                       " (", code("xnnpack"), ": LiteRT's default delegate; ", code("builtin"),
                       ": the built-in kernels, as on a device without the delegate; ",
                       code("reference"), ": the reference kernels). Agreement: the share of "
                       "test samples whose top-1 is the same as on the first path.")),
        Table(tuple(header), tuple(table_rows))]
    if flagged:
        blocks.append(Paragraph(text(
            strong("Accuracy depends on the kernel path: "),
            *[p for i, n in enumerate(flagged) for p in ((", ",) if i else ()) + (code(n),)],
            ". They are recommended only when nothing else qualifies, and then with a "
            "warning.")))
    return Section(text("Accuracy on every kernel path"), tuple(blocks))


def _quantizer(rows: Mapping[str, Mapping[str, Any]]) -> Section | None:
    """What the LiteRT Quantizer's recipes asked and what the ops got, where they differ,
    and every variant's worst tensors against the float model."""
    blocks: list[Block] = []
    asked = [(n, m) for n, r in rows.items() if r["status"] == "ok"
             for m in r.get("asked_vs_got", [])]
    if asked:
        blocks += [
            Paragraph(text("The quantizer leaves an op in float, silently, where its policy "
                           "does not allow what the recipe asks (int4 on a depthwise conv, "
                           "blockwise scales on a conv). Read from each exported model:")),
            Table(("variant", "op", "layer", "asked", "got"), tuple(
                (text(code(n)), text(m["op"]), text(code(m["layer"])), text(m["asked"]),
                 text(strong(m["got"]))) for n, m in asked))]
    worst = [(n, t) for n, r in rows.items() if r["status"] == "ok"
             for t in r.get("worst_tensors", [])]
    if worst:
        blocks += [
            Paragraph(text("Each variant's layers against the float model's on validation "
                           "samples (the LiteRT Quantizer's validator, every tensor they "
                           "share by name): the three with the lowest SNR. Full tables: ",
                           code("models/tflite/<variant>/tensor_errors.csv"),
                           "; overlays for Model Explorer: ",
                           code("models/tflite/<variant>/model_explorer/"), ".")),
            Table(("variant", "tensor", "SNR", "cosine", "MSE"), tuple(
                (text(code(n)), text(code(short_layer(t["tensor"]))),
                 text(f"{t['snr_db']:.1f} dB"), text(f"{t['cosine_similarity']:.5f}"),
                 text(f"{t['mse']:.3g}")) for n, t in worst))]
    return Section(text("LiteRT Quantizer: asked and got, and the worst tensors"),
                   tuple(blocks)) if blocks else None


def _searches(rows: Mapping[str, Mapping[str, Any]],
              plots: Mapping[str, str] | None) -> list[Section]:
    """How each search got to its model, in a few lines, and how it compares with the int8
    variants the converter makes."""
    sections = []
    for name, row in rows.items():
        found = row.get("search") if row["status"] == "ok" else None
        if not found:
            continue
        budget = found["budget"]
        outcome = ("" if found["budget_met"] and found["stop"] == "budget met" else
                   "; the budget was met" if found["budget_met"] else
                   "; the budget was NOT met: the most accurate model found is kept, flagged "
                   "as outside the budget")
        trials = f"{found['trials']} trial{'s' if found['trials'] != 1 else ''}"
        items = [text(strong("Start: "), found["start"].removeprefix("start: "), "."),
                 text(strong("Steps: "), f"{trials}, the model found in trial "
                      f"{found['found_trial']}; see the trajectory below and ",
                      code(f"models/tflite/{name}/search_trajectory.csv"), "."),
                 text(strong("Stop: "), f"{found['stop']}{outcome}."),
                 text(strong("On validation: "), f"accuracy {found['val_accuracy']:.4f} "
                      f"against the float model's {found['float_val_accuracy']:.4f}, a drop "
                      f"of {found['val_drop']:+.4f} (budget {budget:.4f}); "
                      f"{found['seconds']:.1f} s in all, {found['seconds_per_trial']:.2f} s "
                      "a trial.")]
        if not found["resolvable"]:
            items.append(text(strong("The budget is tighter than the validation noise: "),
                              f"even a model agreeing with the float one on every validation "
                              f"sample has a drop bound of {found['noise_floor']:.4f}, above "
                              f"{budget:.4f}; more validation data would show it."))
        layers = ", ".join(f"{k} {v}" for k, v in found["precisions"].items())
        items.append(text(strong("Per layer: "), layers, " (why: ",
                          code(f"models/tflite/{name}/search_decisions.csv"),
                          "; to get it again without searching: ",
                          code(f"models/tflite/{name}/search_rules.yaml"), ")."))
        peers = [n for n in (name, "int8", "int8_selective", "float32")
                 if n in rows and rows[n]["status"] == "ok"]
        table = Table(("variant", "test accuracy", "drop", "size", "p50"), tuple(
            (text(code(n)), text(f"{rows[n]['accuracy']:.4f}"),
             text(f"{rows[n]['accuracy_drop']:+.4f}"), text(fmt("size_bytes",
                                                                rows[n]["size_bytes"])),
             text(fmt("latency_ms", rows[n]["latency_ms_p50"]))) for n in peers))
        blocks: list[Block] = [Bullets(tuple(items)), Paragraph(text(
            "The model found, evaluated once on the test split like every variant, beside "
            "the converter's int8 variants:")), table]
        caption = f"Search trajectory of {name}"
        if plots and caption in plots:
            blocks.append(Figure(caption, plots[caption]))
        sections.append(Section(text("How the search found ", code(name)), tuple(blocks)))
    return sections


def _worst_layers(rows: Mapping[str, Mapping[str, Any]]) -> Section | None:
    # Variants calibrated alike share their per-layer error: list each distinct table once.
    groups: dict[str, list[str]] = {}
    layers_of: dict[str, list[dict[str, Any]]] = {}
    for name, row in rows.items():
        if row["status"] == "ok" and row["worst_layers"]:
            key = repr([(l["tensor_name"], round(l["rmse_over_scale"], 6))
                        for l in row["worst_layers"]])
            groups.setdefault(key, []).append(name)
            layers_of[key] = row["worst_layers"]
    blocks: list[Block] = []
    if groups:
        table_rows = []
        for key, names in groups.items():
            label = text(*[p for i, n in enumerate(names) for p in
                           ((", ",) if i else ()) + (code(n),)])
            for layer in layers_of[key]:
                table_rows.append((label, text(code(short_layer(layer["tensor_name"]))),
                                   text(layer["op_name"]),
                                   text(f"{layer['rmse_over_scale']:.3f}"),
                                   text(f"{layer['max_abs_error']:.4g}")))
        blocks += [
            Paragraph(text("Per-layer error against the float model (TFLite's "
                           "QuantizationDebugger on the calibration samples). rmse/scale is the "
                           "error in quantization steps; rounding alone gives about 0.289. "
                           "Full per-layer tables: ",
                           code("models/tflite/<variant>/layer_errors.csv"), ".")),
            Table(("variants", "layer", "op", "rmse/scale", "max abs error"), tuple(table_rows))]
    for name, row in rows.items():
        if row["status"] == "ok" and row["denylisted_nodes"]:
            nodes = row["denylisted_nodes"]
            layers = [p for i, n in enumerate(nodes)
                      for p in ((", ",) if i else ()) + (code(short_layer(n)),)]
            blocks.append(Paragraph(text(code(name), f" keeps {len(nodes)} layer(s) in float: ",
                                         *layers)))
    return Section(text("Worst-quantized layers"), tuple(blocks)) if blocks else None


def counterpart(name: str, specs: Mapping[str, VariantSpec]) -> str | None:
    """The variant that is `name` without its preparation (equalization, bias correction):
    the same fields otherwise, and not prepared."""
    def plain(spec: VariantSpec) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(spec).items()
                if k not in ("name", "description", "equalize", "bias_correction", "rounding")}

    return next((n for n, s in specs.items() if not s.prepared and n != name
                 and plain(s) == plain(specs[name])), None)


def _preparation(rows: Mapping[str, Mapping[str, Any]], specs: Mapping[str, VariantSpec]
                 ) -> Section | None:
    """What equalization and bias correction changed in each variant that asked for them,
    against the same variant without them."""
    table_rows = []
    for name, row in rows.items():
        prep = row.get("preparation")
        if row["status"] != "ok" or not prep:
            continue
        other = counterpart(name, specs)
        base = rows.get(other) if other else None

        def worst(r: Mapping[str, Any] | None) -> str:
            layers = (r or {}).get("worst_layers") or []
            return f"{layers[0]['rmse_over_scale']:.3f}" if layers else "-"

        def drop(r: Mapping[str, Any] | None) -> str:
            if not r or r.get("status") != "ok":
                return "-"
            return (f"{r['accuracy_drop']:+.4f} [{r['accuracy_drop_ci_low']:+.4f}, "
                    f"{r['accuracy_drop_ci_high']:+.4f}]")

        spread = (f"{prep['spread_median_before']:.1f} -> {prep['spread_median_after']:.1f}"
                  if "spread_median_before" in prep else "-")
        rounded = (f" / {prep['adaround_layers']} (x{prep['adaround_error_ratio_median']:.2f})"
                   if "adaround_layers" in prep else " / -")
        table_rows.append((
            text(code(name)), text(code(other) if other else "-"),
            text(f"{prep['batch_norms_folded']} / {prep['pairs_equalized']} / "
                 f"{prep['relu6_replaced']} / {prep['biases_corrected']}{rounded}"),
            text(spread), text(f"{worst(base)} -> {worst(row)}"),
            text(f"{drop(base)} -> {drop(row)}")))
    if not table_rows:
        return None
    return Section(text("Equalization, bias correction and AdaRound"), (
        Paragraph(text(
            "Variants whose float Keras model was changed before conversion "
            "(", code("equalize"), ", ", code("bias_correction"), ", ",
            code("rounding: adaround"), "), against the same variant without it. Changes: "
            "batch norms folded / layer pairs equalized / ReLU6 made ReLU (equalization needs "
            "them homogeneous; that changes the float function) / biases corrected / layers "
            "rounded by AdaRound (their median output error against rounding to nearest). "
            "Spread: the median over equalized layers of their largest channel "
            "weight range over their smallest, which one per-tensor scale must cover. Worst "
            "layer: the highest rmse/scale of the per-layer error. Drop: accuracy drop "
            "against float32 with its 95% interval. Per layer: ",
            code("models/tflite/<variant>/equalization.csv"), ".")),
        Table(("variant", "without it", "changes", "spread", "worst layer", "drop"),
              tuple(table_rows))))


def _qat(qat: Mapping[str, Any]) -> Section:
    """What QAT covered (`pipeline.produce.qat.coverage`), or why it was not possible."""
    if qat.get("error"):
        return Section(text("Quantization-aware training"), (Paragraph(text(
            strong("QAT was not possible: "), first_line(qat["error"], 600))),))
    cover = qat["coverage"]
    mode = {"whole": "the whole model", "layers": "the layers named in qat.layers",
            "partial": "only the layers tfmot supports (it refused the whole model)"}
    blocks: list[Block] = [Paragraph(text(
        f"QAT annotated {mode.get(cover['mode'], cover['mode'])}: "
        f"{cover['annotated_layers']} of {cover['layers']} layers, holding "
        f"{100 * cover['coverage']:.1f}% of the weights; the rest stays in float. Keras test "
        f"accuracy after fine-tuning: {qat['test_accuracy']:.4f}."))]
    if cover.get("whole_model_error"):
        blocks.append(Paragraph(text("Why not the whole model: ",
                                     first_line(cover["whole_model_error"], 300))))
    if cover["skipped"]:
        blocks.append(Table(("skipped layer class", "layers", "weights", "why"), tuple(
            (text(code(cls)), text(str(v["layers"])), text(f"{v['params']:,}"),
             text(v["reason"])) for cls, v in cover["skipped"].items())))
    return Section(text("Quantization-aware training"), tuple(blocks))


def build(rows: Mapping[str, Mapping[str, Any]], specs: Mapping[str, VariantSpec],
          rec: Mapping[str, Any], reference: str, keras_accuracy: float | None = None,
          plots: Mapping[str, str] | None = None,
          qat: Mapping[str, Any] | None = None,
          facts: Mapping[str, Any] | None = None) -> Document:
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
    """
    ok = {n: r for n, r in rows.items() if r["status"] == "ok"}
    sections = [_recommendation(rows, rec, keras_accuracy, reference, facts),
                _evidence(rows, rec), _all_variants(rows, specs),
                *_searches(rows, plots)]
    device_plots = {c.removeprefix(DEVICE_PLOT): p for c, p in (plots or {}).items()
                    if c.startswith(DEVICE_PLOT)}
    trade_offs = {c: p for c, p in (plots or {}).items()
                  if not c.startswith(("Search", DEVICE_PLOT))}
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
        device = _device(ok, rec, device_plots)
        sections += [Section(latency.title, (*latency.blocks, machine)),
                     *([device] if device else []), _memory(ok), _per_class(ok)]
        paths = _kernel_paths(ok)
        if paths:
            sections.append(paths)
    if qat and (qat.get("error") or qat.get("coverage")):
        sections.append(_qat(qat))
    sections.append(_models(rows))
    worst = _worst_layers(rows)
    if worst:
        sections.append(worst)
    prepared = _preparation(rows, specs)
    if prepared:
        sections.append(prepared)
    quantizer = _quantizer(rows)
    if quantizer:
        sections.append(quantizer)
    failures = [(n, r["error"]) for n, r in rows.items() if r["status"] != "ok"]
    if failures:
        sections.append(Section(text("Failed variants"), ()))
        sections += [Section(text(code(n)), (Code(error.strip()),), level=3)
                     for n, error in failures]
    return Document(TITLE, tuple(sections))
