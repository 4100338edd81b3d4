"""saro: safety alignment of chat LLMs by policy-driven reasoning (SaRO: RW SFT + SRPO DPO)."""

__version__ = "0.1.0"
