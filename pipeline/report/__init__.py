"""Reporting (no TensorFlow): the summary, the recommendation, the report document, what it
says, its renderings (Markdown and HTML) and the files it writes. The plots are
`pipeline.plots`; MLflow, sweeps included, is `pipeline.tracking`.
"""
