"""Models: sources and loading, the embedded SmolLM2, training chat templates, generation backends, teachers."""
