"""Stage quantize@VARIANT: convert the variant's source Keras model to TFLite, inspect it and
measure its per-layer error. A failed conversion is recorded, and the stage still succeeds.

    python stages/quantize.py int8 --data data/prepared/dataset.npz \
        --model models/keras/float.h5 --out models/tflite/int8
"""

from pipeline import cli, data, quantize, train
from pipeline.config import load_params
from pipeline.variants import select


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("variant")
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True, help="the variant's source Keras model")
    p.add_argument("--out", required=True, help="the variant's folder")
    args = p.parse_args()
    cfg, _ = load_params(args.params)
    spec = select(cfg.variants, args.variant)
    calibration = None
    if spec.representative_data:
        ds = data.load(args.data)
        calibration = data.calibration_samples(ds, cfg.quantization.calibration_samples,
                                               cfg.seed)
    model = train.load_model(args.model, qat=spec.source == "qat")
    record = quantize.quantize_variant(model, spec, calibration, args.out)
    cli.log.info("%s: %s in %.1f s -> %s", spec.name, record["status"], record["seconds"],
                 args.out)


if __name__ == "__main__":
    cli.run(main)
