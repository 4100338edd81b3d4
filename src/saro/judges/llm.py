"""LLM-as-judge and the StrongREJECT rubric judge (being written)."""
