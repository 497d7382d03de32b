"""Fitting a network with PyTorch Lightning: batches, the LightningModule, probes, checkpoints."""
