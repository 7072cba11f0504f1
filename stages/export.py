"""Stage export: the recommended variant (and `deploy.variants`) as device packages in
`deploy/<variant>/`: model, C sources, resolver, settings, io.json, predict.py, golden vectors.

    python stages/export.py    # outputs: pipeline.layout; config: params.yaml
"""

from pipeline import cli
from pipeline.steps import export

if __name__ == "__main__":
    cli.stage(__doc__, export.run)
