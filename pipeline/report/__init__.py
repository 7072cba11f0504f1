"""Reporting (no TensorFlow): the summary, the recommendation, the report document and its
renderings, plots, MLflow tracking and sweeps.
"""
