"""Stage prepare: load the dataset and write its seeded, stratified splits.

    python stages/prepare.py --out data/prepared/dataset.npz
"""

from pipeline import cli, data
from pipeline.config import load_params


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--out", required=True, help="the .npz of train/val/test splits")
    args = p.parse_args()
    cfg, _ = load_params(args.params)
    ds = data.prepare(cfg.data, cfg.seed)
    data.save(ds, args.out)
    cli.log.info("wrote %s: train %d, val %d, test %d samples of shape %s", args.out,
                 len(ds.x_train), len(ds.x_val), len(ds.x_test), ds.input_shape)


if __name__ == "__main__":
    cli.run(main)
