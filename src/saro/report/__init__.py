"""The report stage: report.json (every number with its interval and n), report.md and report.html, built from the
eval stage's metrics and the run's other outputs; ``report.py`` is the stage, the rest its tables and renderers."""
