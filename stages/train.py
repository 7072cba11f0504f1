"""Stage train: train the float Keras model; write it, its history and its test accuracy.

    python stages/train.py --data data/prepared/dataset.npz --out models/keras/float.h5 \
        --history models/keras/float_history.json --metrics models/keras/float_metrics.json
"""

from pipeline import cli, data, train
from pipeline.config import load_params
from pipeline.io import write_json


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="the float Keras model (.h5)")
    p.add_argument("--history", required=True, help="per-epoch curves (JSON)")
    p.add_argument("--metrics", required=True, help="test accuracy (JSON)")
    args = p.parse_args()
    cfg, _ = load_params(args.params)
    ds = data.load(args.data)
    model, history, accuracy = train.train(ds, cfg.model, cfg.train, cfg.seed)
    train.save_model(model, args.out)
    write_json(args.history, history)
    write_json(args.metrics, {"test_accuracy": accuracy})


if __name__ == "__main__":
    cli.run(main)
