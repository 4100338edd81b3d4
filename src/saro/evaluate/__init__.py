"""Evaluation: generate on held-out suites, judge, compute metrics (run.py, metrics.py), write reports.

Kept import-free: ``import saro`` imports this package so that ``saro.evaluate`` names the API function."""
