"""Evaluation: generate on held-out suites, judge, compute metrics (run.py, metrics.py), write reports."""
