"""The report's sections on how each variant was made: what the LiteRT Quantizer was asked
and gave, the searches' trials, the worst-quantized layers, the weights adjusted before
conversion (equalization, bias correction, AdaRound) and what QAT covered."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pipeline.metrics import fmt
from pipeline.report.document import (Block, Bullets, Figure, Paragraph, Section, Table,
                                      code, short_layer, strong, text)
from pipeline.report.summary import first_line
from pipeline.variants import VariantSpec


def quantizer(rows: Mapping[str, Mapping[str, Any]]) -> Section | None:
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


def searches(rows: Mapping[str, Mapping[str, Any]],
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
             text(fmt("latency_ms_p50", rows[n]["latency_ms_p50"]))) for n in peers))
        blocks: list[Block] = [Bullets(tuple(items)), Paragraph(text(
            "The model found, evaluated once on the test split like every variant, beside "
            "the converter's int8 variants:")), table]
        caption = f"Search trajectory of {name}"
        if plots and caption in plots:
            blocks.append(Figure(caption, plots[caption]))
        sections.append(Section(text("How the search found ", code(name)), tuple(blocks)))
    return sections


def worst_layers(rows: Mapping[str, Mapping[str, Any]]) -> Section | None:
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

    return next((n for n, s in specs.items() if not s.adjusts_weights and n != name
                 and plain(s) == plain(specs[name])), None)


def adjustments(rows: Mapping[str, Mapping[str, Any]], specs: Mapping[str, VariantSpec]
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


def qat(qat: Mapping[str, Any]) -> Section:
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
