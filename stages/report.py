"""Stage report: the summary of all variants, the recommendation and the candidate under the
budget, plots and the HTML page.

    python stages/report.py           # outputs: pipeline.layout; config: params.yaml
"""

from pipeline import cli
from pipeline.steps import report

if __name__ == "__main__":
    cli.stage(__doc__, report.run)
