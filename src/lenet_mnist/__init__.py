"""LeNet-5 on MNIST as a reproducible DVC pipeline: download, prepare, train, evaluate."""
