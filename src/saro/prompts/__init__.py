"""Prompt sources, the project's own seed prompts, and jailbreak attacks."""
