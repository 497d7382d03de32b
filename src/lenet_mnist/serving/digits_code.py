"""The file MLflow copies into the logged model and runs to build the pyfunc ("models from
code"): loading it runs this code and unpickles nothing (docs/architecture.md)."""

from mlflow.models import set_model

from lenet_mnist.serving.pyfunc import Digits

set_model(Digits())
