"""Training data synthesis: RIT-D for the Reasoning-style Warmup (rw.py), SRPO preference pairs (srpo.py)."""
