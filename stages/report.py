"""Stage report: the summary of all variants, the recommendation under the budget, plots and
the HTML page.

    python stages/report.py --variants models/tflite --evaluations evaluation \
        --benchmarks benchmark --keras-metrics models/keras/float_metrics.json \
        --histories float=models/keras/float_history.json qat=models/keras/qat_history.json \
        --out reports
"""

from pathlib import Path

from pipeline import cli, steps
from pipeline.config import load_params


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--variants", required=True, type=Path,
                   help="folder of the quantize stage's folders")
    p.add_argument("--evaluations", required=True, type=Path,
                   help="folder of <variant>/metrics.json")
    p.add_argument("--benchmarks", required=True, type=Path, help="folder of <variant>.json")
    p.add_argument("--keras-metrics", required=True, type=Path)
    p.add_argument("--histories", nargs="+", default=[], metavar="MODEL=HISTORY_JSON",
                   help="training histories for the curves, e.g. float=models/keras/...")
    p.add_argument("--out", required=True, type=Path, help="folder for the report")
    args = p.parse_args()
    histories = dict(item.split("=", 1) for item in args.histories)
    paths = steps.report(load_params(args.params)[0], args.variants, args.evaluations,
                         args.benchmarks, args.keras_metrics,
                         {m: Path(h) for m, h in histories.items()}, args.out)
    print(paths["markdown"].read_text(encoding="utf-8"))


if __name__ == "__main__":
    cli.run(main)
