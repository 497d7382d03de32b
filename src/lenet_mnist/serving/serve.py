"""Serve a logged model over HTTP with bounded requests and replies (docs/serving.md)."""

from __future__ import annotations

import argparse
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lenet_mnist.errors import PipelineError, one_line, run_stage

MAX_BODY = 4 * 1024 * 1024  # bytes: about 1,300 images as JSON, 3 KB each
AT_ONCE = 8  # connections; more get uvicorn's 503: each request may hold a parsed body

# strict: JSON numbers only, never a boolean or a string converted to one
Pixel = Annotated[float, Field(strict=True, ge=0, le=255, allow_inf_nan=False)]
Row = Annotated[list[Pixel], Field(min_length=28, max_length=28)]
Image = Annotated[list[Row], Field(min_length=28, max_length=28)]


class Images(BaseModel):
    """The one request body /invocations takes; pydantic parses it with a depth limit."""

    model_config = ConfigDict(extra="forbid")
    inputs: Annotated[list[Image], Field(min_length=1)]


def refusal(status: int, message: str) -> Response:
    """MLflow's error shape on one bounded line: it never holds the request."""
    body = {"error_code": "BAD_REQUEST", "message": one_line(message)}
    return JSONResponse(body, status_code=status)


def first_error(err: ValidationError) -> str:
    """`inputs[0][3][4]: Input should be a valid number`: where, and what, never the value."""
    error = err.errors(include_input=False, include_url=False)[0]
    where = "".join(f"[{i}]" if isinstance(i, int) else f".{i}" for i in error["loc"])
    shape = 'the body must be {"inputs": [images of 28 rows of 28 numbers from 0 to 255]}'
    return f"{where.lstrip('.') or 'body'}: {error['msg']}; {shape}"


async def checked(request: Request, call_next: RequestResponseEndpoint) -> Response:
    """A 415 or 400 for anything but the one body /invocations takes, before MLflow, which
    reads it whole, echoes, casts and recurses into it, sees it; Starlette hands it on."""
    if (request.method, request.url.path) != ("POST", "/invocations"):
        return await call_next(request)
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return refusal(415, "Content-Type must be application/json")
    try:
        Images.model_validate_json(await request.body())
    except ValidationError as err:
        return refusal(400, first_error(err))
    return await call_next(request)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="MLflow model URI, such as models:/lenet-mnist@champion")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--max-body", type=int, default=MAX_BODY, help="bytes a request may send")
    args = parser.parse_args(argv)
    import mlflow.pyfunc
    import uvicorn
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    try:
        model = mlflow.pyfunc.load_model(args.model)
    except MlflowException as err:
        raise PipelineError(f"cannot load {args.model}: {err.message}") from None
    checking = BaseHTTPMiddleware(scoring_server.init(model), dispatch=checked)
    app = RequestBodyLimitMiddleware(checking, args.max_body)  # outside: it stops the reading
    uvicorn.run(app, host=args.host, port=args.port, limit_concurrency=AT_ONCE)


if __name__ == "__main__":
    run_stage(main)
