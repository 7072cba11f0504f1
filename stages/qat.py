"""Stage qat: quantization-aware fine-tuning of the float model.

    python stages/qat.py --data data/prepared/dataset.npz --model models/keras/float.h5 \
        --out models/keras/qat.h5 --history models/keras/qat_history.json \
        --metrics models/keras/qat_metrics.json
"""

from pipeline import cli, data, qat, train
from pipeline.config import load_params
from pipeline.io import write_json


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True, help="the float Keras model")
    p.add_argument("--out", required=True, help="the QAT Keras model (.h5)")
    p.add_argument("--history", required=True)
    p.add_argument("--metrics", required=True)
    args = p.parse_args()
    cfg, _ = load_params(args.params)
    ds = data.load(args.data)
    model, history, accuracy = qat.fine_tune(train.load_model(args.model), ds, cfg.qat, cfg.seed)
    train.save_model(model, args.out)
    write_json(args.history, history)
    write_json(args.metrics, {"test_accuracy": accuracy})


if __name__ == "__main__":
    cli.run(main)
