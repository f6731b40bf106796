"""Evaluation stage: metrics, confidence intervals, significance tests, figures and reports."""
