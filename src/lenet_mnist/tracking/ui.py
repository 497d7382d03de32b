"""Links into the MLflow UI that open the runs table, and the saved view of its columns."""

from __future__ import annotations

import json
import os
import shlex
import urllib.parse

LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` listens unless told otherwise
VIEW_ID = "lenet-runs"  # the saved view's id: what a link names in viewStateShareKey
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_ID}"  # the UI's own prefix for saved views
# MLflow 3's UI opens its GenAI screens unless a link says this; no tag or option changes that.
ML = "workflowType=machine_learning"
VIEW_NAME = "Runs: params and metrics"
VIEW_PARAMS = ("train.batch_size", "train.epochs", "optimizer.name", "optimizer.lr")
VIEW_METRICS = ("test_acc", "test_loss", "val_acc")


def runs_view(created_ms: int) -> str:
    """The saved view's tag value, as the UI's "Views" menu reads it: the param and metric
    columns, which the runs table otherwise hides. `created_ms` (the experiment's creation
    time) keeps the value the same, so an unchanged view is never written again."""
    columns = [f"params.`{k}`" for k in VIEW_PARAMS] + [f"metrics.`{k}`" for k in VIEW_METRICS]
    columns += ["attributes.`Dataset`", "attributes.`Models`"]  # the data and logged models
    state = json.dumps({"selectedColumns": columns}, separators=(",", ":"))
    return json.dumps({"name": VIEW_NAME, "createdAt": created_ms, "state": state})


def ui_command(tracking_uri: str) -> str | None:
    """The shell-quoted command that serves the UI for a store without a server, or None; a
    sqlite store inside the working folder is named relative to it, as the README shows."""
    if tracking_uri.startswith(("http://", "https://")):
        return None
    if tracking_uri.startswith("sqlite:///"):  # without the ?timeout= of store.open_store
        path = tracking_uri.removeprefix("sqlite:///").partition("?")[0]
        relative = os.path.relpath(path) if os.path.isabs(path) else path
        if not relative.startswith(".."):
            tracking_uri = "sqlite:///" + relative
    return shlex.join(["mlflow", "ui", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1"])


def experiment_url(tracking_uri: str, experiment_id: str) -> str:
    """The experiment's runs table in the saved view. The runs tab is named in the path
    because the UI's redirect from the bare experiment page drops the view key."""
    return f"{_runs(tracking_uri, experiment_id)}?{ML}&viewStateShareKey={VIEW_ID}"


def _runs(tracking_uri: str, experiment_id: str) -> str:
    """The runs table at a tracking server's own address, without any user:password from the
    URI (it is printed); for any other store, at LOCAL_UI, where `ui_command` serves it."""
    base = LOCAL_UI
    if tracking_uri.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(tracking_uri)
        netloc = parts.netloc.rpartition("@")[2]
        base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return f"{base}/#/experiments/{experiment_id}/runs"


def where(stage: str, tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The lines a stage ends with: its run's page, every run's table, and how to open them."""
    lines = [
        f"{stage}: MLflow run {run_id}: {_runs(tracking_uri, experiment_id)}/{run_id}?{ML}",
        f"{stage}: all runs: {experiment_url(tracking_uri, experiment_id)}",
    ]
    if command := ui_command(tracking_uri):
        lines.append(f"{stage}: start the UI first: {command}")
    return "\n".join(lines)
