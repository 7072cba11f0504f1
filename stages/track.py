"""Stage track: log this pipeline execution to MLflow (a parent run, a child per variant)
and register the chosen variant's `.tflite` with the alias `candidate`.

    python stages/track.py --root . --out reports/mlflow_run.json
"""

from pathlib import Path

from pipeline import cli, steps
from pipeline.config import load_params


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--root", default=Path("."), type=Path,
                   help="where the other stages' outputs are (dvc.yaml's layout)")
    p.add_argument("--out", required=True, type=Path, help="record of the logged run ids")
    args = p.parse_args()
    cfg, raw = load_params(args.params)
    steps.track(cfg, raw, steps.Layout(args.root), Path(args.params), args.out)


if __name__ == "__main__":
    cli.run(main)
