"""Serve a logged model over HTTP with bounded requests and replies.

    python -m lenet_mnist.serving.serve models:/lenet-mnist@champion [--port 5001]

MLflow's own scoring app (what `mlflow models serve` runs) behind two ASGI middlewares that
`mlflow models serve` has no place for: MLflow reads any body whole, echoes an unparsable
one, casts `true` and `"7"` to pixels and recurses into any nesting. Before MLflow reads a
byte, a body over `--max-body` gets Starlette's 413, and /invocations anything but
`{"inputs": [images of 28 rows of 28 numbers from 0 to 255]}` a 400 naming the first bad
place (docs/serving.md).
"""

from __future__ import annotations

import argparse
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import Headers
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


def refusal(status: int, code: str, message: str) -> ASGIApp:
    """MLflow's error shape, `{"error_code", "message"}`, on one bounded line: it never
    holds the request."""
    return JSONResponse({"error_code": code, "message": one_line(message)}, status_code=status)


def first_error(err: ValidationError) -> str:
    """`inputs[0][3][4]: Input should be a valid number`: where, and what, never the value."""
    error = err.errors(include_input=False, include_url=False)[0]
    where = "".join(f"[{i}]" if isinstance(i, int) else f".{i}" for i in error["loc"])
    shape = 'the body must be {"inputs": [images of 28 rows of 28 numbers from 0 to 255]}'
    return f"{where.lstrip('.') or 'body'}: {error['msg']}; {shape}"


def refused(headers: Headers, body: bytes) -> ASGIApp | None:
    """A 415 or 400 for anything but the one body /invocations takes."""
    if headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return refusal(415, "BAD_REQUEST", "Content-Type must be application/json")
    try:
        Images.model_validate_json(body)
    except ValidationError as err:
        return refusal(400, "BAD_REQUEST", first_error(err))
    return None


class Checked:
    """The scoring app behind a check of /invocations' whole body, read here first; the
    body limit, outside, stops the reading once it is over."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) != ("POST", "/invocations"):
            return await self.app(scope, receive, send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        refusing = refused(Headers(scope=scope), bytes(body))
        if refusing is not None:
            return await refusing(scope, receive, send)
        await self.app(scope, replay(bytes(body), receive), send)


def replay(body: bytes, receive: Receive) -> Receive:
    """The body read already, then the connection's own messages (a disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


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
    app = RequestBodyLimitMiddleware(Checked(scoring_server.init(model)), args.max_body)
    uvicorn.run(app, host=args.host, port=args.port, limit_concurrency=AT_ONCE)


if __name__ == "__main__":
    run_stage(main)
