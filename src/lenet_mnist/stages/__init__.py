"""The DVC stages: each reads params.yaml, calls one function, and writes its outputs."""
