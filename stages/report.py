"""Stage report: the summary of all variants and the recommendation under the budget.

    python stages/report.py --variants models/tflite --evaluations evaluation \
        --benchmarks benchmark --keras-metrics models/keras/float_metrics.json \
        --histories float=models/keras/float_history.json qat=models/keras/qat_history.json \
        --out reports
"""

from pathlib import Path

from pipeline import cli, quantize, report
from pipeline.config import load_params
from pipeline.io import read_json


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--variants", required=True, help="folder of the quantize stage's folders")
    p.add_argument("--evaluations", required=True, help="folder of <variant>/metrics.json")
    p.add_argument("--benchmarks", required=True, help="folder of <variant>.json")
    p.add_argument("--keras-metrics", required=True)
    p.add_argument("--histories", nargs="+", default=[], metavar="MODEL=HISTORY_JSON",
                   help="training histories for the curves, e.g. float=models/keras/...")
    p.add_argument("--out", required=True, help="folder for the summary files")
    args = p.parse_args()
    cfg, _ = load_params(args.params)
    names = list(cfg.variants)
    records = {v: quantize.read_record(Path(args.variants) / v) for v in names}
    evaluations = {v: read_json(Path(args.evaluations) / v / "metrics.json") for v in names}
    benchmarks = {v: read_json(Path(args.benchmarks) / f"{v}.json") for v in names}
    rows = report.summarize(cfg.variants, records, evaluations, benchmarks,
                            cfg.report.reference)
    rec = report.recommend(rows, cfg.report.max_accuracy_drop)
    keras_accuracy = read_json(args.keras_metrics)["test_accuracy"]
    histories = {}
    for item in args.histories:
        model, _, path = item.partition("=")
        histories[model] = read_json(path)
    paths = report.write_report(args.out, rows, cfg.variants, rec, keras_accuracy, histories)
    print(paths["markdown"].read_text(encoding="utf-8"))


if __name__ == "__main__":
    cli.run(main)
