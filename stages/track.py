"""Stage track: log this pipeline execution to MLflow (a parent run, a child per variant)
and register the candidate's `.tflite` with the alias `candidate`.

    python stages/track.py            # outputs: pipeline.layout; config: params.yaml
"""

from pipeline import cli
from pipeline.steps import track

if __name__ == "__main__":
    cli.stage(__doc__, track.run, with_config=True)
