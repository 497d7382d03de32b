"""The served model as MLflow's "models from code": the file MLflow runs to get the pyfunc.

Logging the file instead of a cloudpickle of `Digits` means loading runs this package's
code, never unpickles: `MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false` serves it. The file is
copied into the logged model and executed there, so it holds nothing but the one call
that names the model; importing it elsewhere only sets MLflow's slot for that model.
"""

from mlflow.models import set_model

from lenet_mnist.serving.pyfunc import Digits

set_model(Digits())
