"""Analyses: embedding-space overlap of prompt kinds, contamination checks."""
