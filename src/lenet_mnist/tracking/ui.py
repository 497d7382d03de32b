"""Where a user looks at runs: links into the MLflow UI that open the runs table.

MLflow 3's UI opens an experiment on its GenAI screens (traces, an empty overview) unless
the link says `workflowType=machine_learning` or this browser has once clicked "Model
training" in the UI's sidebar. No experiment tag, server option or environment variable
changes that: the UI reads the choice from the link, then from the browser's localStorage
(`mlflow.workflowType_v1`), and the `mlflow.experimentKind` tag only decides the landing
page in builds whose workflow navigation is off, which 3.17's is not. So the links made
here carry the choice, and every experiment carries a saved view that shows the columns
that tell runs apart (the UI's own saved-view tag, listed under "Views" in the runs table).
"""

from __future__ import annotations

import json
import os
import shlex
import urllib.parse

LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` listens unless told otherwise
VIEW_ID = "lenet-runs"  # the saved view's id: what a link names in viewStateShareKey
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_ID}"  # the UI's own prefix for saved views
VIEW_NAME = "Runs: params and metrics"
VIEW_PARAMS = ("train.batch_size", "train.epochs", "optimizer.name", "optimizer.lr")
VIEW_METRICS = ("test_acc", "test_loss", "val_acc")


def runs_view(created_ms: int) -> str:
    """The saved view's tag value, in the envelope the UI's "Views" menu reads.

    The state selects the param and metric columns; without it the runs table shows
    only names, dates and durations, and every visitor would have to pick the columns
    by hand. `created_ms` (the experiment's creation time) keeps the value the same on
    every call, so an unchanged view is never written again.
    """
    columns = [f"params.`{k}`" for k in VIEW_PARAMS] + [f"metrics.`{k}`" for k in VIEW_METRICS]
    columns += ["attributes.`Dataset`", "attributes.`Models`"]  # the data and logged models
    state = json.dumps({"selectedColumns": columns}, separators=(",", ":"))
    return json.dumps({"name": VIEW_NAME, "createdAt": created_ms, "state": state})


def ui_base(tracking_uri: str) -> str:
    """The MLflow UI that shows this store.

    A tracking server serves its own UI at its own address (without any user:password
    from the URI, which would otherwise be printed). Any other store (sqlite, a folder)
    has no server: the user starts one with `ui_command`, which listens on LOCAL_UI.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return LOCAL_UI
    parts = urllib.parse.urlsplit(tracking_uri)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def ui_command(tracking_uri: str) -> str | None:
    """The command that serves the UI for a store without a server, or None for a server.

    Shell-quoted, so that it works pasted as printed, a path with spaces included. A sqlite
    store inside the working folder (the repository root, where DVC runs the stages) is
    named relative to it, so the pipeline's default store prints the README's command.
    """
    if tracking_uri.startswith(("http://", "https://")):
        return None
    if tracking_uri.startswith("sqlite:///"):
        path = tracking_uri.removeprefix("sqlite:///")
        relative = os.path.relpath(path) if os.path.isabs(path) else path
        if not relative.startswith(".."):
            tracking_uri = "sqlite:///" + relative
    return shlex.join(["mlflow", "ui", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1"])


def experiment_url(tracking_uri: str, experiment_id: str, columns: bool = True) -> str:
    """The experiment's runs table, in the UI that `ui_base` names.

    `workflowType=machine_learning` is what opens the runs table instead of MLflow 3's
    GenAI overview; the runs tab is named in the path because the UI's redirect from the
    bare experiment page drops the view key. `columns` opens the saved view that shows
    VIEW_PARAMS and VIEW_METRICS; a banner then says it is a shared view, whose column
    changes are not kept until "Exit shared view" is clicked.
    For sqlite the UI must be started first (`ui_command`), which serves it at LOCAL_UI.
    """
    query = {"workflowType": "machine_learning"}
    if columns:
        query["viewStateShareKey"] = VIEW_ID
    path = f"/#/experiments/{experiment_id}/runs?{urllib.parse.urlencode(query)}"
    return ui_base(tracking_uri) + path


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """One run's page (params, metrics, artifacts), with the model-training sidebar.

    For sqlite the UI must be started first (`ui_command`), which serves it at LOCAL_UI.
    """
    path = f"/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
    return ui_base(tracking_uri) + path


def where(stage: str, tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The lines a stage ends with: its run's page, every run's table, and how to open them."""
    lines = [
        f"{stage}: MLflow run {run_id}: {run_url(tracking_uri, experiment_id, run_id)}",
        f"{stage}: all runs: {experiment_url(tracking_uri, experiment_id)}",
    ]
    if command := ui_command(tracking_uri):
        lines.append(f"{stage}: start the UI first: {command}")
    return "\n".join(lines)
