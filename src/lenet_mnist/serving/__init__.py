"""The model as users get it: published to MLflow's registry, served, and read by predict."""
