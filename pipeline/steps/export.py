"""Step export: the recommended variant (and every variant `deploy.variants` names) as a
package a device project drops in (`pipeline.ship`), from what the lab measured: the model,
its C sources for TensorFlow Lite for Microcontrollers, its I/O facts, a LiteRT example and
golden vectors (no TensorFlow)."""

from __future__ import annotations

import logging
from typing import Any

from pipeline.config import Config
from pipeline.io import atomic_dir, read_json, write_json
from pipeline.layout import RECOMMENDATION, Layout
from pipeline.ship import project

log = logging.getLogger(__name__)
INDEX = "index.json"  # each package's status, or why it was not written


def run(cfg: Config, layout: Layout) -> dict[str, Any]:
    """Write `deploy/<variant>/` for the candidate and `deploy.variants`, and `index.json`;
    returns the index. A variant that failed, or a tool failing on it, is that package's
    failure with the reason, never the stage's."""
    candidate = read_json(layout.report(RECOMMENDATION))["candidate"]
    shared = project.shared(cfg, layout)
    index: dict[str, Any] = {"candidate": candidate, "packages": {}}
    with atomic_dir(layout.packages) as out:
        for name in dict.fromkeys([candidate, *cfg.deploy.variants]):
            try:
                result = project.package_variant(cfg, layout, name, out / name, shared)
            except Exception as exc:  # a tool on a user's model: this package fails alone
                log.error("package of %s failed: %s: %s", name, type(exc).__name__, exc)
                index["packages"][name] = {"status": "failed",
                                           "error": f"{type(exc).__name__}: {exc}"}
                continue
            index["packages"][name] = {"status": "ok", "micro": result["micro"],
                                       "files": result["files"]}
            log.info("package %s in %s (TFLite Micro sources: %s)", name,
                     layout.package(name), result["micro"]["status"])
        write_json(out / INDEX, index)
    return index
