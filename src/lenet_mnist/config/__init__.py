"""The config: one typed schema for conf/ (Hydra) and params.yaml (DVC), and its loading.

It imports nothing of the package but its error type, and nothing heavy."""
