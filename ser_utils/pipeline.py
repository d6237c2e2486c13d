"""Run the notebooks in order with papermill and render each to HTML (``make all`` / ``make smoke``).

A notebook is skipped when nothing it depends on changed since its last successful run: its own
source, the ``ser_utils`` code, its parameters, the data and model the profile names, and every
notebook before it. ``force=True`` (``FORCE=1`` in make) reruns all of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .config import REPO_ROOT, Profile, display_path, env_path, extra_corpora, get_profile
from .progress import HEADLESS_ENV
from .report import provenance, record_provenance, write_index

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = ("01_download", "02_eda", "03_baselines", "04_wav2vec2", "05_results", "06_generalisation")


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names it, the cell and the kept executed copy."""


@dataclass
class Step:
    name: str
    status: str  # "ran" | "skipped"
    seconds: float = 0.0


def _environment_parameters(name: str) -> dict:
    """Parameters a notebook takes from the environment, passed explicitly so that changing them reruns it."""
    if name == "06_generalisation":
        return {"corpora": ",".join(str(p) for p in extra_corpora())}
    return {}


def _fingerprint(profile: Profile, name: str, parameters: dict, upstream: str) -> str:
    digest = hashlib.sha256()
    digest.update((NOTEBOOK_DIR / f"{name}.ipynb").read_bytes())
    for source in sorted((REPO_ROOT / "ser_utils").glob("*.py")):
        digest.update(source.name.encode() + source.read_bytes())
    context = {"parameters": parameters, "data": profile.describe_data(),
               "model": profile.describe_model(), "upstream": upstream}
    digest.update(json.dumps(context, sort_keys=True).encode())
    return digest.hexdigest()


def render_html(notebook: Path, html: Path) -> Path:
    """Render an executed notebook to a standalone HTML page (figures embedded)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook, as_version=4)
    # The parameters cells become one line at the top, so a report opens with its header.
    tags = {"parameters", "injected-parameters"}
    nb.cells = [c for c in nb.cells if not tags & set(c.metadata.get("tags", []))]
    parameters = nb.metadata.get("papermill", {}).get("parameters", {})
    if parameters:
        listed = ", ".join(f"`{k}={v!r}`" for k, v in parameters.items())
        nb.cells.insert(1, nbformat.v4.new_markdown_cell(f"Parameters of this run: {listed}"))
    exporter = HTMLExporter(exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text(body, encoding="utf-8")
    return html


def run_notebook(profile: Profile, name: str, parameters: dict | None = None,
                 notebook_dir: Path = NOTEBOOK_DIR) -> Path:
    """Execute one notebook with papermill (profile injected) and render its HTML report.

    The executed copy is kept under ``work_dir/executed`` - also when it fails, for inspection.
    """
    import papermill as pm

    executed = profile.work_dir / "executed" / f"{name}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    os.environ.update(HEADLESS_ENV)  # the kernel inherits it: no progress bars in the reports
    for variable in ("RAVDESS_DIR", "SER_WORK_DIR", "SER_REPORTS_DIR"):  # kernels run in notebooks/
        if os.environ.get(variable, "").strip():
            os.environ[variable] = str(env_path(variable))
    try:
        pm.execute_notebook(
            str(notebook_dir / f"{name}.ipynb"), str(executed),
            parameters={"profile": profile.name, **(parameters or {})},
            cwd=str(notebook_dir), progress_bar=False, log_output=False,
        )
    except pm.PapermillExecutionError as err:
        raise NotebookFailed(
            f"notebook {name} failed in cell {err.exec_count} ({err.ename}: {err.evalue}); "
            f"the executed notebook is kept at {executed}"
        ) from None
    return render_html(executed, profile.reports_dir / f"{name}.html")


def run_pipeline(profile_name: str | None = None, *, only: list[str] | None = None,
                 force: bool = False, parameters: dict[str, dict] | None = None) -> list[Step]:
    """Run every notebook (or those in ``only``) in order; returns what ran and what was skipped."""
    profile = get_profile(profile_name)
    stamps = profile.work_dir / "pipeline"
    stamps.mkdir(parents=True, exist_ok=True)
    steps, upstream = [], ""
    for name in NOTEBOOKS:
        if only and name not in only and name.split("_")[0] not in only:
            continue
        params = {**_environment_parameters(name), **(parameters or {}).get(name, {})}
        fingerprint = _fingerprint(profile, name, params, upstream)
        stamp = stamps / f"{name}.stamp"
        html = profile.reports_dir / f"{name}.html"
        if not force and html.is_file() and stamp.is_file() and stamp.read_text() == fingerprint:
            print(f"[{name}] unchanged, skipped (FORCE=1 reruns)", flush=True)
            steps.append(Step(name, "skipped"))
        else:
            print(f"[{name}] running ({profile.name} profile) ...", flush=True)
            start = time.perf_counter()
            stamp.unlink(missing_ok=True)
            info = provenance(profile)  # before the run: the results notebook edits README.md
            run_notebook(profile, name, params)
            record_provenance(profile, name, info)
            stamp.write_text(fingerprint)
            steps.append(Step(name, "ran", time.perf_counter() - start))
            print(f"[{name}] done in {steps[-1].seconds:.0f} s -> {display_path(html)}",
                  flush=True)
        upstream = fingerprint
    index = write_index(profile, NOTEBOOKS)
    print(f"index: {display_path(index)}", flush=True)
    return steps


def add_arguments(parser) -> None:
    """The options of ``python -m ser_utils pipeline``."""
    parser.add_argument("--profile", choices=("full", "smoke"), default=None,
                        help="default: $SER_PROFILE, else full")
    parser.add_argument("--only", nargs="*", help="notebook names or numbers, e.g. 03 04_wav2vec2")
    parser.add_argument("--force", action="store_true", help="rerun notebooks even if unchanged")


def run_from_args(args) -> int:
    try:
        run_pipeline(args.profile, only=args.only, force=args.force)
    except NotebookFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
