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
import shutil
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from ..core.atomic import atomic_path, atomic_write_text
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
from ..core.console import one_line, say
from ..core.interrupts import raising
from ..core.progress import HEADLESS_ENV
from ..results.report import provenance, record_provenance, write_index
from .kernels import KERNELS, recording_kernel_manager, stop_started_processes

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = ("01_download", "02_eda", "03_baselines", "04_pretrained_encoders", "05_results", "06_generalisation")
#: The kernel's own log (not the notebook's output): warnings only at ERROR, so that the terminal of
#: ``make all`` shows progress lines, not ipykernel's "running over TCP without encryption" per notebook
#: (the kernel listens on localhost only, and each run starts and stops its own).
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


class NotebookFailed(RuntimeError):
    """A notebook raised; ``str()`` is one line naming it, the cell, the kept executed copy and the error's
    first line. ``advice``: the error's further lines (the download's "point the study at a local copy"),
    to be printed as lines of their own."""

    def __init__(self, message: str, advice: list[str] | None = None):
        super().__init__(message)
        self.advice = advice or []


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
    """Render an executed notebook as a report page (``results.render.render_report``: navigation, its key
    numbers first from ``results_dir``, code folded, figures embedded, no script from elsewhere)."""
    from ..results.render import render_report

    return render_report(notebook, html, html.stem, results_dir or html.parent / "results", NOTEBOOKS)


def run_notebook(profile: Profile, name: str, parameters: dict | None = None,
                 notebook_dir: Path = NOTEBOOK_DIR) -> Path:
    """Execute one notebook with papermill (profile injected) and render its HTML report.

    The executed copy is kept under ``work_dir/executed`` - also when it fails, for inspection - and is
    written whole or not at all (``core.atomic``: papermill writes it in place, and a full disk left 8 kB
    of it). The kernel's own output goes beside it, ``<name>.log``
    (:func:`ser_utils.cli.kernels.recording_kernel_manager`).
    """
    import papermill as pm

    executed = profile.work_dir / "executed" / f"{name}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    # The kernel inherits the environment: no progress bars in the reports, and paths made absolute (kernels
    # run in notebooks/). Set for the run only.
    paths = {v: str(env_path(v)) for v in ("RAVDESS_DIR", "SER_WORK_DIR", "SER_REPORTS_DIR")
             if os.environ.get(v, "").strip()}
    failure = None
    KERNELS.clear()
    with _environment({**HEADLESS_ENV, **paths}), atomic_path(executed, suffix=".tmp.ipynb") as temporary:
        try:
            pm.execute_notebook(
                str(notebook_dir / f"{name}.ipynb"), str(temporary),
                parameters={"profile": profile.name, **(parameters or {})},
                cwd=str(notebook_dir), progress_bar=False, log_output=False, extra_arguments=KERNEL_ARGUMENTS,
                kernel_manager_class=recording_kernel_manager(executed.with_suffix(".log")),
            )
        except pm.PapermillExecutionError as err:
            failure = err  # the block ends normally: the executed copy, error included, is kept
    if failure is not None:
        first, *advice = [one_line(line) for line in str(failure.evalue).strip().splitlines()] or [""]
        raise NotebookFailed(f"notebook {name} failed in cell {failure.exec_count} (the executed notebook is kept "
                             f"at {executed}): {failure.ename}: {first}", advice)
    return render_html(executed, profile.reports_dir / f"{name}.html", profile.results_dir)


def run_pipeline(profile_name: str | None = None, *, only: list[str] | None = None, force: bool = False,
                 keep_folds: bool = False, dry_run: bool = False,
                 parameters: dict[str, dict] | None = None) -> list[Step]:
    """Run every notebook (or those in ``only``) in order; returns what ran and what was skipped.

    ``dry_run``: run nothing, print what would run and why (steps are ``"would run"`` / ``"skipped"``).
    """
    forced = {RECOMPUTE_ENV: repr(time.time()), KEEP_FOLDS_ENV: "1" if keep_folds else None}
    # A Ctrl-C or SIGTERM raises at once, wherever it lands: the notebook's kernel is stopped and its reports
    # put back on the way out (_kept_as_before).
    with raising(), _environment(forced if force and not dry_run else {}):  # kernels inherit it
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
        stamp, html = stamps / f"{name}.stamp", profile.reports_dir / f"{name}.html"
        if only and name not in only and name.split("_")[0] not in only:
            # Left out, it does not rerun: the next notebooks build on what it made when it last ran, which is
            # what a run of them records (a full run's upstream for a notebook that is up to date is the same).
            upstream = recorded_fingerprint(stamp)
            continue
        params = {**_environment_parameters(name), **parameters.get(name, {})}
        parts = fingerprint_parts(profile, name, params, upstream)
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
            with _kept_as_before(profile.reports_dir, stamp):
                parts = _run_and_stamp(profile, name, params, upstream, stamp)
            steps.append(Step(name, "ran", time.perf_counter() - start))
            say(f"[{name}] done in {steps[-1].seconds:.0f} s -> {display_path(html)}")
        upstream = _digest(parts)
    if not dry_run:
        index = write_index(profile, NOTEBOOKS)
        say(f"index: {display_path(index)}")
    return steps


def recorded_fingerprint(stamp: Path) -> str:
    """The fingerprint a notebook's stamp records (its inputs' digest when it last ran); ``"not run"`` when it
    has none, so that the notebooks after it run again once it has run."""
    try:
        return str(json.loads(stamp.read_text())["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return "not run"


def _run_and_stamp(profile: Profile, name: str, params: dict, upstream: str, stamp: Path) -> dict[str, str]:
    """Run one notebook and write its stamp; returns the inputs the stamp records."""
    info = provenance(profile)  # before the run: the results notebook edits README.md
    run_notebook(profile, name, params)
    record_provenance(profile, name, info)
    # Recorded as the inputs are *after* the run: notebook 01 may have generated the corpus and 04 the
    # tiny backbone (smoke profile), so an unchanged second run matches and skips.
    parts = fingerprint_parts(profile, name, params, upstream)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stamp, json.dumps({"fingerprint": _digest(parts), "parts": parts}, indent=1))
    return parts


@contextmanager
def _kept_as_before(reports: Path, stamp: Path):
    """One notebook's run. Its stamp is set aside first: a run that fails, or is killed, leaves the notebook
    to run again. A Ctrl-C or SIGTERM stops every process the run started, then puts the reports folder and
    the stamp back as they were before the run (the notebook writes result tables as it goes).

    The reports are kept as hard links: every file the package writes is replaced, never changed in place
    (``core.atomic``), so a link keeps the old content, and costs no space on a nearly full disk.
    """
    before = stamp.parent / f".before-{stamp.stem}"
    shutil.rmtree(before, ignore_errors=True)  # left by a run that was killed
    _link_tree(reports, before / "reports")
    if stamp.is_file():
        os.replace(stamp, before / stamp.name)
    try:
        yield
    except KeyboardInterrupt:
        stop_started_processes()
        _restore_tree(before / "reports", reports)
        if (before / stamp.name).is_file():
            os.replace(before / stamp.name, stamp)
        else:
            stamp.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(before, ignore_errors=True)


def _files(folder: Path) -> list[Path]:
    """Every file (or link) under ``folder``, its sub-folders included; links to folders are not followed."""
    return [Path(root) / name for root, _, names in os.walk(folder) for name in names]


def _link_tree(folder: Path, copy: Path) -> None:
    copy.mkdir(parents=True, exist_ok=True)
    for path in _files(folder):
        kept = copy / path.relative_to(folder)
        kept.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, kept, follow_symlinks=False)
        except OSError:  # a file system without hard links
            shutil.copy2(path, kept, follow_symlinks=False)


def _restore_tree(copy: Path, folder: Path) -> None:
    """Make ``folder`` what ``copy`` holds: files added since are removed, replaced ones put back."""
    kept = {path.relative_to(copy) for path in _files(copy)}
    for path in _files(folder):
        if path.relative_to(folder) not in kept:
            path.unlink()
    for relative in kept:
        path = folder / relative
        if not (path.is_file() and os.path.samefile(path, copy / relative)):
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(copy / relative, path)
    for root, _, _ in sorted(os.walk(folder), reverse=True):  # folders made since, now empty
        if not (copy / Path(root).relative_to(folder)).is_dir():
            with suppress(OSError):
                os.rmdir(root)
