"""dvc.yaml's rules: every stage keeps the last good outputs when it fails (its run cache
or `persist`), and `dvc plots show` works offline: .dvc/config points it at a page
template that inlines vega, vega-lite and vega-embed, so a browser with no network still
draws every plot that dvc.yaml declares, with the axis titles written there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.trained import one_epoch

# Debian's (Playwright's own download fails here); CHROMIUM names another, as .ci/run's
# set-up does on a forge's Ubuntu runner
CHROMIUM = os.environ.get("CHROMIUM") or "/usr/bin/chromium"
TEMPLATE = REPO / ".dvc" / "plots" / "offline.html"
LIBRARIES = ("vega", "vega-lite", "vega-embed")
STAGES = ("train", "evaluate")


def dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


def entries(items: list) -> dict[str, dict]:
    """A dvc.yaml list of `path` or `{path: options}` items, as path -> options."""
    out: dict[str, dict] = {}
    for item in items:
        out.update({item: {}} if isinstance(item, str) else {k: v or {} for k, v in item.items()})
    return out


def stage_plots() -> dict[str, dict]:
    """Every stage's plot outputs, by path, with their options (cache and plot props)."""
    return {
        path: props
        for stage in dvc_yaml()["stages"].values()
        for path, props in entries(stage.get("plots", [])).items()
    }


def all_plots() -> list[dict]:
    """What `dvc plots show` draws: the top-level plots, then each stage's plot outputs."""
    return [*entries(dvc_yaml()["plots"]).values(), *stage_plots().values()]


def majors(text: str, pattern: str) -> dict[str, str]:
    return {m["name"]: m["major"] for m in re.finditer(pattern, text)}


def test_every_plot_names_its_axes_and_no_csv_is_drawn_against_its_row_number():
    plots = all_plots()
    assert len(plots) == 4  # accuracy, loss, learning rate, confusion matrix
    for props in plots:
        assert {"title", "x", "y", "x_label", "y_label"} <= props.keys(), props
    assert len({p["title"] for p in plots}) == len(plots)


def test_the_history_is_cached_and_the_predictions_are_committed_and_persist():
    """The per-epoch history is cached (a failed train checks it out again, with the
    weights); the per-image predictions are committed, and left in place while evaluate
    runs."""
    train, evaluate = (entries(dvc_yaml()["stages"][s].get("plots", [])) for s in STAGES)
    assert train["data/metrics/train_history.csv"].get("cache", True) is True
    assert evaluate["data/metrics/test_predictions.csv"]["cache"] is False
    assert evaluate["data/metrics/test_predictions.csv"]["persist"] is True


def test_stages_with_cached_outputs_keep_the_run_cache_and_the_rest_persist():
    """A failed stage must leave the last good outputs: DVC deletes an output before it
    runs its stage unless it persists, and a stage with a persistent output has no run
    cache. So a stage whose outputs are all cached checks them out again when it fails
    (outputs.restore_deleted), and one with a committed (uncached) output persists it."""
    for name, stage in dvc_yaml()["stages"].items():
        outs = {
            **entries(stage.get("outs", [])),
            **entries(stage.get("metrics", [])),
            **entries(stage.get("plots", [])),
        }
        cached = [o.get("cache", True) for o in outs.values()]
        persist = [o.get("persist", False) for o in outs.values()]
        source = (REPO / "src/lenet_mnist/stages" / f"{name}.py").read_text()
        restores = "on_failure=outputs.restore_deleted" in source
        if all(cached) and name not in NOT_RUN_CACHED:
            assert not any(persist) and restores, name
        else:
            assert all(persist) and not restores, name


# Stages that DVC must never restore from its run cache: publishing writes to MLflow, so
# a restore would skip it in a store that lacks these weights.
NOT_RUN_CACHED = {"publish"}


def test_uncached_outputs_are_plots_or_metrics_so_dvc_keeps_the_run_cache():
    """DVC saves no run cache for a stage with a plain `cache: false` out: a queued grid
    that repeats an experiment would then train it again instead of restoring it. Only
    publishing is kept out of the run cache, on purpose, by its uncached receipt."""
    for name, stage in dvc_yaml()["stages"].items():
        outs = entries(stage.get("outs", []))
        if any(o.get("persist") for o in outs.values()):
            continue  # a persistent output keeps a stage out of the run cache anyway
        if name in NOT_RUN_CACHED:
            assert outs and not any(o.get("cache", True) for o in outs.values()), name
        else:
            assert all(o.get("cache", True) for o in outs.values()), name


def test_dvc_config_makes_plain_plots_show_use_the_offline_template():
    from dvc.config import Config

    configured = Config(dvc_dir=str(REPO / ".dvc"))["plots"]["html_template"]
    # DVC resolves a relative plots.html_template against the .dvc folder.
    assert (REPO / ".dvc" / configured).resolve() == TEMPLATE.resolve()


def test_the_template_inlines_the_majors_dvc_render_would_load_from_its_cdn():
    from dvc_render.vega import VegaRenderer

    wanted = majors(VegaRenderer.SCRIPTS, r"/npm/(?P<name>vega(?:-lite|-embed)?)@(?P<major>\d+)\.")
    page = TEMPLATE.read_text(encoding="utf-8")
    pinned = majors(page, r"npm package (?P<name>vega(?:-lite|-embed)?)@(?P<major>\d+)\.\d+\.\d+:")
    assert set(wanted) == set(LIBRARIES) and pinned == wanted
    for name in LIBRARIES:
        assert re.search(rf"<script>/\* {name} \d+\.\d+\.\d+ \*/", page), name
    assert "{plot_divs}" in page
    assert "{scripts}" not in page  # DVC would fill it with its CDN <script src> tags
    assert not re.search(r"<script[^>]*\bsrc=", page)


def plots_workspace(root: Path, trained: dict) -> Path:
    """The repository's dvc.yaml, DVC config, templates and committed predictions,
    with the history of a real one-epoch training of the slice: what a workspace holds
    after `dvc repro` (the history is a cached output, absent from a fresh checkout)."""
    files = ["dvc.yaml", ".dvc/config", *(p.relative_to(REPO) for p in REPO.glob(".dvc/plots/*"))]
    for name in [*files, "data/metrics/test_predictions.csv"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    shutil.copy2(trained["data"] / "metrics/train_history.csv", root / "data/metrics")
    return root


def render_plots(workspace: Path, out: Path) -> Path:
    """The real `dvc plots show`, with no flags, into `out`: what a user runs."""
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", "-o", str(out)],
        cwd=workspace,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out / "index.html"


# Per drawn chart: its title, axis titles, and how many data marks have a drawn path.
CHARTS_JS = """() => [...document.querySelectorAll('.vega-embed svg.marks')].map(svg => ({
    title: [...svg.querySelectorAll('g.role-title-text text')].map(t => t.textContent),
    axes: [...svg.querySelectorAll('g.role-axis-title text')].map(t => t.textContent),
    marks: [...svg.querySelectorAll('g.role-mark.mark-line path, g.role-mark.mark-rect path')]
        .filter(p => (p.getAttribute('d') || '').length > 0).length,
    width: svg.getBoundingClientRect().width,
    height: svg.getBoundingClientRect().height,
}))"""


@pytest.mark.slow
def test_dvc_plots_show_draws_every_plot_with_the_network_blocked(
    tmp_path, prepared_slice, tmp_path_factory
):
    from playwright.sync_api import Route, sync_playwright

    assert os.path.exists(CHROMIUM), "browser tests need Chromium: apt-get install -y chromium"
    workspace = plots_workspace(tmp_path / "workspace", one_epoch(prepared_slice, tmp_path_factory))
    index = render_plots(workspace, tmp_path / "dvc_plots")
    assert "cdn.jsdelivr" not in index.read_text(encoding="utf-8")
    plots = all_plots()
    expected = len(plots)

    blocked: list[str] = []
    errors: list[str] = []

    def offline(route: Route) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    shot = tmp_path / "dvc-plots-offline.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.route("**/*", offline)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(index.as_uri())
        page.wait_for_function(
            f"document.querySelectorAll('.vega-embed svg.marks').length >= {expected}",
            timeout=30_000,
        )
        charts = page.evaluate(CHARTS_JS)
        page.screenshot(path=shot, full_page=True)
        browser.close()
    if target := os.environ.get("LENET_SCREENSHOTS"):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, Path(target) / shot.name)

    assert blocked == [] and errors == []
    assert len(charts) == expected
    by_title = {title: c for c in charts for title in c["title"]}
    for props in plots:
        chart = by_title[props["title"]]
        assert sorted(chart["axes"]) == sorted([props["x_label"], props["y_label"]]), chart
        assert chart["marks"] > 0 and chart["width"] > 100 and chart["height"] > 100, chart
