"""Test-set metrics, predictions and figures from saved weights; no Lightning, no MLflow."""
