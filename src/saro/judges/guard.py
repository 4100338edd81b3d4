"""Llama-Guard-3 and WildGuard classifier judges (being written)."""
