"""MLflow: where runs live, how they are written, and what a run records of its origin."""
