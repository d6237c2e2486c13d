"""Provenance: what every report and result says about how it was made."""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import io
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from ..core.atomic import atomic_write_text
from ..core.config import REPO_ROOT, Profile
from .markers import KEY_NUMBERS_SLOT, SMOKE_BANNER, smoke_banner_html

PACKAGES = ("torch", "torchaudio", "transformers", "accelerate", "librosa", "opensmile",
            "scikit-learn", "numpy", "pandas", "soundfile")


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
    """The header cell of every notebook (as Markdown, for notebooks opened in JupyterLab): title, smoke
    warning, and a provenance table."""
    info = provenance(profile)
    packages = ", ".join(f"{k} {v}" for k, v in info.pop("packages").items())
    rows = "\n".join(f"| {k} | {v} |" for k, v in {**info, "packages": packages}.items())
    banner = f"> {SMOKE_BANNER}\n\n" if profile.is_smoke else ""
    return f"# {title}\n\n{banner}| | |\n|---|---|\n{rows}\n"


def header_html(profile: Profile, title: str) -> str:
    """The header of every report: title, smoke warning, the slot the renderer fills with the report's key
    numbers (:data:`ser_utils.results.markers.KEY_NUMBERS_SLOT`), and the provenance folded away."""

    info = provenance(profile)
    packages = ", ".join(f"{k} {v}" for k, v in info.pop("packages").items())
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in {**info, "packages": packages}.items())
    banner = smoke_banner_html() if profile.is_smoke else ""
    return (f"<h1>{html.escape(title)}</h1>{banner}{KEY_NUMBERS_SLOT}<details class='provenance'><summary>How this "
            f"report was made: {html.escape(info['profile'])} profile, commit {html.escape(info['commit'])}, "
            f"{html.escape(info['date'])}</summary><table>{rows}</table></details>")


def show_header(profile: Profile, title: str) -> None:
    """Show the report's header in a notebook (HTML, with a Markdown copy for other front ends), and
    give every figure shown after it an alt text (:func:`describe_figures`)."""
    from IPython.display import display

    describe_figures()
    display({"text/html": header_html(profile, title), "text/markdown": header_markdown(profile, title)}, raw=True)


def figure_alt_text(figure) -> str:
    """What a matplotlib figure shows, in words, from its titles and axis labels (the alt text of the
    report's image): ``Figure: <suptitle>; <axes title> (x: <label>, y: <label>); ...``."""
    parts = []
    suptitle = getattr(figure, "_suptitle", None)
    if suptitle is not None and suptitle.get_text():
        parts.append(suptitle.get_text())
    for ax in figure.axes:
        if not ax.get_visible() or ax.get_label() == "<colorbar>":
            continue
        labels = ", ".join(f"{axis}: {text}" for axis, text in (("x", ax.get_xlabel()), ("y", ax.get_ylabel())) if text)
        text = ax.get_title() or "panel"
        parts.append(f"{text} ({labels})" if labels else text)
    return ("Figure: " + "; ".join(parts))[:600] if parts else ""


def describe_figures() -> None:
    """In a running kernel, make every matplotlib figure's PNG carry :func:`figure_alt_text` as its
    ``alt`` metadata (nbconvert writes it into the report's ``<img alt=...>``). No kernel: nothing."""
    try:
        from IPython import get_ipython
        from matplotlib.figure import Figure
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    formatter = shell.display_formatter.formatters["image/png"]

    def png_with_alt(figure):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight")
        alt = figure_alt_text(figure)
        return buffer.getvalue(), ({"alt": alt} if alt else {})

    def register(*_):
        formatter.for_type(Figure, png_with_alt)

    register()
    # matplotlib's inline backend installs its own PNG formatter when it loads (at a notebook's first figure)
    # and shows the cell's figures in a post_execute callback registered then: this one, registered first,
    # runs before it and puts ours back.
    if not getattr(shell, "_ser_describes_figures", False):
        shell.events.register("post_execute", register)
        shell._ser_describes_figures = True


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


def write_index(profile: Profile, notebooks) -> Path:
    """``reports_dir/index.html`` and the site pages around it (:func:`ser_utils.results.site.write_site`)."""
    from .site import write_site  # here: pandas and matplotlib slow the CLI's start

    return write_site(profile, notebooks)
