"""LeNet-5 on MNIST as a reproducible DVC pipeline: download, prepare, train, evaluate."""

import gc

# Every stage imports torch and most import MLflow: hundreds of thousands of objects. At
# CPython's default threshold (a collection per 700 new objects) the collector rescans
# that growing heap hundreds of times during the imports: 0.8 s of the evaluate stage's
# 4 s budget on a 2-core machine. Collecting every 10,000 keeps the collector on, less
# often. It holds for the whole process that imports this package (a test run, a notebook).
gc.set_threshold(10_000, *gc.get_threshold()[1:])
