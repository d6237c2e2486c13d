"""Run the notebooks in order with papermill and render each to HTML (``make all`` / ``make smoke``).

A notebook is skipped when nothing it depends on changed since its last successful run: its own
source, the ``ser_utils`` code (``fingerprint.code_digest``: statements, not comments or docstrings,
the rule the caches follow too), its parameters, the corpus (the listing of the data folder: names,
sizes, modification times), the backbone's weights (notebook 04), and every notebook before it.
``dry_run=True`` (``pipeline --dry-run``) only says what would run and why.

``force=True`` (``FORCE=1`` in make) recomputes everything: every notebook reruns, and cached features,
embeddings and fine-tuning folds made before this run are recomputed (the kernels see
``SER_RECOMPUTE_BEFORE``, the run's start time). ``keep_folds=True`` (``KEEP_FOLDS=1``) keeps finished
fine-tuning folds whose inputs are unchanged, the expensive part on a GPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..core.atomic import atomic_write_text
from ..core.config import (
    KEEP_FOLDS_ENV,
    RECOMPUTE_ENV,
    REPO_ROOT,
    Profile,
    describe_backbone,
    display_path,
    env_path,
    extra_corpora,
    get_profile,
)
from ..core.console import say
from ..core.progress import HEADLESS_ENV
from ..results.report import provenance, record_provenance, write_index

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = ("01_download", "02_eda", "03_baselines", "04_pretrained_encoders", "05_results", "06_generalisation")
#: The kernel's own log (not the notebook's output): warnings only at ERROR, so that the terminal of
#: ``make all`` shows progress lines, not ipykernel's "running over TCP without encryption" per notebook
#: (the kernel listens on localhost only, and each run starts and stops its own).
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names it, the cell and the kept executed copy."""


@dataclass
class Step:
    name: str
    status: str  # "ran" | "skipped" | "would run" (dry run)
    seconds: float = 0.0


def _environment_parameters(name: str) -> dict:
    """Parameters a notebook takes from the environment, passed explicitly so that changing them reruns it."""
    if name == "06_generalisation":
        return {"corpora": ",".join(str(p) for p in extra_corpora())}
    return {}


#: Notebooks that load the pretrained backbones: their fingerprint includes their weights.
USES_BACKBONE = ("04_pretrained_encoders",)
_REASONS = {"notebook": "its source changed", "code": "ser_utils code changed", "parameters": "parameters changed",
            "data": "the corpus changed (files added, removed or edited)", "backbone": "the backbone changed",
            "upstream": "an earlier notebook changed"}


def fingerprint_parts(profile: Profile, name: str, parameters: dict, upstream: str) -> dict[str, str]:
    """What notebook ``name`` depends on, one digest per input (see the module docstring)."""
    import ser_utils

    from ..backbones import backbone_fingerprint
    from ..core.fingerprint import code_digest
    from ..data.corpus import corpus_digest

    data = profile.describe_data()
    if profile.data_dir is not None:
        data += f" {corpus_digest(profile.data_dir)}"
    parts = {"notebook": hashlib.sha256((NOTEBOOK_DIR / f"{name}.ipynb").read_bytes()).hexdigest(),
             "code": code_digest(ser_utils), "parameters": json.dumps(parameters, sort_keys=True, default=str),
             "data": data, "upstream": upstream}
    if name in USES_BACKBONE:  # a local folder's weights digest (never a machine's path), or the name
        identities = [backbone_fingerprint(b) for b in profile.backbones]
        parts["backbone"] = ", ".join(describe_backbone(b) if i == b else i
                                      for b, i in zip(profile.backbones, identities, strict=True))
    return parts


def _digest(parts: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def stale_reasons(stamp: Path, html: Path, parts: dict[str, str]) -> list[str]:
    """Why a notebook must run (empty: it is up to date): no report, never run, or changed inputs."""
    if not stamp.is_file():
        return ["not run yet"]
    if not html.is_file():
        return [f"its report {display_path(html)} is missing"]
    try:
        recorded = json.loads(stamp.read_text())["parts"]
    except (ValueError, KeyError, TypeError):
        return ["recorded by an older version of the pipeline"]
    keys = [k for k in _REASONS if k in parts or k in recorded] + sorted((set(parts) | set(recorded)) - set(_REASONS))
    return [_REASONS.get(k, f"{k} changed") for k in keys if parts.get(k) != recorded.get(k)]


def render_html(notebook: Path, html: Path, results_dir: Path | None = None) -> Path:
    """Render an executed notebook as a report page (``results.site.render_report``: navigation, its key
    numbers first from ``results_dir``, code folded, figures embedded, no script from elsewhere)."""
    from ..results.site import render_report

    return render_report(notebook, html, html.stem, results_dir or html.parent / "results", NOTEBOOKS)


def run_notebook(profile: Profile, name: str, parameters: dict | None = None,
                 notebook_dir: Path = NOTEBOOK_DIR) -> Path:
    """Execute one notebook with papermill (profile injected) and render its HTML report.

    The executed copy is kept under ``work_dir/executed`` - also when it fails, for inspection.
    """
    import papermill as pm

    executed = profile.work_dir / "executed" / f"{name}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    # The kernel inherits the environment: no progress bars in the reports, and paths made absolute (kernels
    # run in notebooks/). Set for the run only.
    paths = {v: str(env_path(v)) for v in ("RAVDESS_DIR", "SER_WORK_DIR", "SER_REPORTS_DIR")
             if os.environ.get(v, "").strip()}
    try:
        with _environment({**HEADLESS_ENV, **paths}):
            pm.execute_notebook(
                str(notebook_dir / f"{name}.ipynb"), str(executed),
                parameters={"profile": profile.name, **(parameters or {})},
                cwd=str(notebook_dir), progress_bar=False, log_output=False, extra_arguments=KERNEL_ARGUMENTS,
            )
    except pm.PapermillExecutionError as err:
        raise NotebookFailed(
            f"notebook {name} failed in cell {err.exec_count} ({err.ename}: {err.evalue}); "
            f"the executed notebook is kept at {executed}"
        ) from None
    return render_html(executed, profile.reports_dir / f"{name}.html", profile.results_dir)


def run_pipeline(profile_name: str | None = None, *, only: list[str] | None = None, force: bool = False,
                 keep_folds: bool = False, dry_run: bool = False,
                 parameters: dict[str, dict] | None = None) -> list[Step]:
    """Run every notebook (or those in ``only``) in order; returns what ran and what was skipped.

    ``dry_run``: run nothing, print what would run and why (steps are ``"would run"`` / ``"skipped"``).
    """
    forced = {RECOMPUTE_ENV: repr(time.time()), KEEP_FOLDS_ENV: "1" if keep_folds else None}
    with _environment(forced if force and not dry_run else {}):  # kernels inherit it: older caches recomputed
        return _run_pipeline(get_profile(profile_name), only, force, dry_run, parameters or {})


@contextmanager
def _environment(values: dict[str, str | None]):
    """Set (``None``: unset) environment variables for the block, then restore them."""
    def apply(settings: dict[str, str | None]) -> None:
        for key, value in settings.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    saved = {k: os.environ.get(k) for k in values}
    apply(values)
    try:
        yield
    finally:
        apply(saved)


def _run_pipeline(profile: Profile, only, force: bool, dry_run: bool, parameters: dict[str, dict]) -> list[Step]:
    stamps = profile.work_dir / "pipeline"
    steps, upstream = [], ""
    for name in NOTEBOOKS:
        if only and name not in only and name.split("_")[0] not in only:
            continue
        params = {**_environment_parameters(name), **parameters.get(name, {})}
        parts = fingerprint_parts(profile, name, params, upstream)
        stamp, html = stamps / f"{name}.stamp", profile.reports_dir / f"{name}.html"
        reasons = (["FORCE"] if force else []) + stale_reasons(stamp, html, parts)
        if dry_run:
            steps.append(Step(name, "would run" if reasons else "skipped"))
            say(f"[{name}] " + (f"would run: {'; '.join(reasons)}" if reasons else "unchanged, would be skipped"))
        elif not reasons:
            say(f"[{name}] unchanged, skipped (FORCE=1 reruns)")
            steps.append(Step(name, "skipped"))
        else:
            say(f"[{name}] running ({profile.name} profile: {'; '.join(reasons)}) ...")
            start = time.perf_counter()
            stamp.unlink(missing_ok=True)
            info = provenance(profile)  # before the run: the results notebook edits README.md
            run_notebook(profile, name, params)
            record_provenance(profile, name, info)
            # Recorded as the inputs are *after* the run: notebook 01 may have generated the corpus and 04 the
            # tiny backbone (smoke profile), so an unchanged second run matches and skips.
            parts = fingerprint_parts(profile, name, params, upstream)
            stamps.mkdir(parents=True, exist_ok=True)
            atomic_write_text(stamp, json.dumps({"fingerprint": _digest(parts), "parts": parts}, indent=1))
            steps.append(Step(name, "ran", time.perf_counter() - start))
            say(f"[{name}] done in {steps[-1].seconds:.0f} s -> {display_path(html)}")
        upstream = _digest(parts)
    if not dry_run:
        index = write_index(profile, NOTEBOOKS)
        say(f"index: {display_path(index)}")
    return steps
