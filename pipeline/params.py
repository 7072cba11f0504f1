"""`params.yaml`: `conf/` composed with Hydra (as `dvc exp run` does), written, and loaded.

`conf/` is the source of truth; `params.yaml` is its composition, the file `dvc repro` and
every stage read. The schema that checks both is `pipeline.config`. Regenerate `params.yaml`
after editing `conf/`:

    python -m pipeline.config [overrides]   # or: make params
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import Config, parse_config
from pipeline.io import write_text

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
PARAMS_FILE = ROOT / "params.yaml"


def compose(overrides: Sequence[str] = (), config_dir: Path = CONF_DIR,
            config_name: str = "config") -> dict[str, Any]:
    """Compose `conf/` with Hydra (as `dvc exp run` does) into a plain, resolved mapping."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)
    raw.pop("hydra", None)
    return raw


def render_params(raw: Mapping[str, Any]) -> str:
    """The text of `params.yaml` for a composed config (stable key order, as DVC dumps it)."""
    header = ("# Generated from conf/ by `make params` (python -m pipeline.config); "
              "edit conf/, not this file.\n")
    return header + yaml.safe_dump(dict(raw), sort_keys=False, default_flow_style=False)


def load_params(path: str | Path = PARAMS_FILE) -> tuple[Config, dict[str, Any]]:
    """Load and validate `params.yaml`.

    Returns:
        The typed config and the raw mapping (for logging the resolved config).

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if the file is not a mapping or fails validation.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist; run `make params`")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a YAML mapping")
    return parse_config(raw), raw


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m pipeline.config [overrides] [--out FILE]`: compose, validate, write."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. train.epochs=3")
    parser.add_argument("--out", default=str(PARAMS_FILE), help="where to write params.yaml")
    args = parser.parse_args(argv)
    raw = compose(args.overrides)
    parse_config(raw)  # refuse an invalid composition before writing anything
    write_text(args.out, render_params(raw))
    print(f"wrote {args.out}")
