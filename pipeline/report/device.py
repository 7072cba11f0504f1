"""The report's device sections: what each variant costs on the CPU, on a microcontroller
(TensorFlow Lite for Microcontrollers' arena, flash, MACs), on each Ethos-U NPU and on the
GPU delegate, with the budgets and what they excluded; and how each variant's answers differ
between kernel paths (XNNPACK, LiteRT's built-in and reference kernels, TFLM)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.metrics import fmt
from pipeline.report.document import (Block, Bullets, Figure, Paragraph, Section, Table, Text,
                                      ci, code, strong, text)
from pipeline.report.recommend import on_device
from pipeline.report.summary import first_line


def _bytes(value: int | None) -> str:
    return "-" if value is None else f"{value:,} B"


def section(ok: Mapping[str, Mapping[str, Any]], rec: Mapping[str, Any],
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


def kernel_paths(ok: Mapping[str, Mapping[str, Any]]) -> Section | None:
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
                cells.append(text(fmt("latency_ms_p50", fig["latency_ms_p50"]) if fig
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
