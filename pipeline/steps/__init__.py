"""One module per DVC stage, each with one function `run(cfg, layout, ...)`: what the stage
script (`stages/<stage>.py`) calls under `dvc repro` and what the Hydra app
(`python -m pipeline`) calls in one process. Paths come from `pipeline.layout.Layout`.

Each stage's code dependencies in `dvc.yaml` are this module's import closure
(`pipeline.dvcfile`), so a step imports only what its stage runs.
"""

# The stages in the order they run: `dvc.yaml` (`pipeline.dvcfile`) and the Hydra app
# (`pipeline.steps.all`) both take it from here. The per-variant ones run once per variant.
ORDER = ("prepare", "intake", "train", "qat", "layer_errors", "quantize", "reference_outputs", "evaluate",
         "benchmark", "footprint", "calibration", "report", "export", "track")
PER_VARIANT = ("quantize", "evaluate", "benchmark")
