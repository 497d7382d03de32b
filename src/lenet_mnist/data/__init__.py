"""MNIST on disk: verified downloads, the IDX format, and the prepared arrays (numpy only)."""
