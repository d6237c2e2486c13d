"""Provenance: what every report and result says about how it was made."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import html
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from ..core.atomic import atomic_write_text
from ..core.config import REPO_ROOT, Profile

PACKAGES = ("torch", "torchaudio", "transformers", "accelerate", "librosa", "opensmile",
            "scikit-learn", "numpy", "pandas", "soundfile")
SMOKE_BANNER = ("**SMOKE PROFILE: the numbers in this report mean nothing.** They come from a generated "
                "corpus and a tiny randomly initialised model, and only show that the pipeline runs.")


#: What makes the results: a change here, not committed yet, marks the commit ``-dirty``. (The
#: pipeline's own outputs - reports/, the README's results section - do not.)
CODE_PATHS = ("ser_utils", "notebooks", "requirements.txt", "pyproject.toml")


def git_commit() -> str:
    """Short commit hash of the repository, with ``-dirty`` when the code has uncommitted changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, text=True,
                                capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
                               cwd=REPO_ROOT, text=True, capture_output=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_versions(names=PACKAGES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_description() -> str:
    """The compute device as a reader should see it, e.g. ``cuda (NVIDIA H100 80GB HBM3)``."""
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def provenance(profile: Profile) -> dict:
    """Profile, data, model, commit, date, device and package versions, for reports and results."""
    return {
        "profile": profile.name,
        "data": profile.describe_data(),
        "backbones": profile.describe_backbones(),
        "commit": git_commit(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device_description(),
        "packages": package_versions(),
    }


def header_markdown(profile: Profile, title: str) -> str:
    """The header cell of every notebook: title, smoke warning, and a provenance table."""
    info = provenance(profile)
    packages = ", ".join(f"{k} {v}" for k, v in info.pop("packages").items())
    rows = "\n".join(f"| {k} | {v} |" for k, v in {**info, "packages": packages}.items())
    banner = f"> {SMOKE_BANNER}\n\n" if profile.is_smoke else ""
    return f"# {title}\n\n{banner}| | |\n|---|---|\n{rows}\n"


def show_header(profile: Profile, title: str) -> None:
    """Display :func:`header_markdown` in a notebook."""
    from IPython.display import Markdown, display

    display(Markdown(header_markdown(profile, title)))


def write_run_info(path: str | Path, profile: Profile, config: dict | None = None) -> Path:
    """Write the configuration of a run next to its results, with full provenance (JSON). Settings objects
    (``config.BaselineRun``, ``EncoderRun``, any dataclass) are stored as their fields, not as a repr."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({**provenance(profile), "config": config or {}}, indent=2, default=_fields))
    return path


def _fields(value):
    """JSON for what ``json`` cannot write itself: a settings object's fields, else its text."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def record_provenance(profile: Profile, notebook: str, info: dict | None = None) -> Path:
    """Add (or refresh) one notebook's provenance (default: as of now) in ``results_dir/provenance.json``."""
    path = profile.results.table("provenance")
    records = json.loads(path.read_text()) if path.is_file() else {}
    records[notebook] = info or provenance(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(dict(sorted(records.items())), indent=1))
    return path


_INDEX_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1400px; margin: 2em auto; padding: 0 1em; color: #222; }
td:not(:last-child) { white-space: nowrap; }
table { border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
.banner { background: #fff3cd; border: 1px solid #e0c060; padding: 0.8em; margin: 1em 0; }
img { max-width: 100%; }
"""


def _cross_corpus_line(results: Path) -> str:
    """One paragraph on the cross-corpus evaluation (notebook 06), from ``cross_corpus.csv``."""
    from .store import read_table

    table = read_table(results, "cross_corpus")
    ok = None if table is None else table[table["status"] == "ok"] if "status" in table else table
    if ok is None or ok.empty:
        return ("<p>Other corpora (<a href='06_generalisation.html'>06_generalisation</a>): none evaluated; "
                "name manifests in <code>SER_EXTRA_CORPORA</code>.</p>")
    best = ok.loc[ok["uar"].idxmax()]
    return (f"<p>Other corpora (<a href='06_generalisation.html'>06_generalisation</a>): "
            f"{ok['corpus'].nunique()} evaluated; best UAR {100 * best['uar']:.1f} % "
            f"({html.escape(str(best['model']))} on {html.escape(str(best['corpus']))}, adapt "
            f"{html.escape(str(best['adapt']))}, {html.escape(str(best['labels']))} labels).</p>")


def write_index(profile: Profile, notebooks) -> Path:
    """``reports_dir/index.html``: the headline table and figure, and a link to every report with its
    provenance (profile, data, backbones, device, commit, date). Reads what notebook 05 wrote."""
    from .store import HEADLINE_FIGURE, read_table  # here: pandas and scikit-learn slow the CLI's start

    results = profile.results_dir
    parts = ["<h1>Speech emotion recognition on RAVDESS: pretrained encoders (wav2vec 2.0, Whisper) vs "
             "handcrafted features</h1>"]
    if profile.is_smoke:
        parts.append(f"<div class='banner'>{html.escape(SMOKE_BANNER.replace('**', ''))}</div>")
    parts.append("<p>Accuracy and UAR in %: mean ± standard deviation over folds (or seeds) [95 % bootstrap "
                 "interval over test clips]. <code>actor-kfold</code> (EmoBox folds, unseen actors) is the "
                 "primary protocol; <code>random-80-20</code> shares actors between train and test.</p>")
    headline = read_table(results, "headline")
    if headline is not None:
        parts.append(headline.to_html(index=False, escape=True, border=0))
    else:
        parts.append("<p>No results yet: run the results notebook (05).</p>")
    figure = profile.reports_dir / HEADLINE_FIGURE
    if figure.is_file():
        encoded = base64.b64encode(figure.read_bytes()).decode()
        parts.append(f"<img alt='headline figure' src='data:image/png;base64,{encoded}'>")
    parts.append(_cross_corpus_line(results))
    record = profile.results.table("provenance")
    records = json.loads(record.read_text()) if record.is_file() else {}
    rows = []
    for name in notebooks:
        info = records.get(name, {})
        link = f"<a href='{name}.html'>{name}</a>" if (profile.reports_dir / f"{name}.html").is_file() else name
        cells = [info.get(k, info.get("model", "-") if k == "backbones" else "-")
                 for k in ("profile", "data", "backbones", "device", "commit", "date")]
        rows.append("<tr><td>" + link + "</td>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    parts.append("<h2>Reports</h2><table><tr><th>report</th><th>profile</th><th>data</th><th>backbones</th>"
                 "<th>device</th><th>commit</th><th>date</th></tr>" + "".join(rows) + "</table>")
    parts.append("<p>Machine-readable numbers behind every table: <code>results/</code> (metrics per fold, "
                 "predictions per clip, splits).</p>")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>SER study: results</title>"
            f"<style>{_INDEX_STYLE}</style></head><body>{''.join(parts)}</body></html>")
    path = profile.reports_dir / "index.html"
    atomic_write_text(path, page)
    return path
