"""Hydra jobs and sweeps: one job trains, evaluates and publishes; a sweep is a parent run."""
