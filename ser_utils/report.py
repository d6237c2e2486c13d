"""Provenance: what every report and result says about how it was made."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from .config import REPO_ROOT, Profile

PACKAGES = ("torch", "torchaudio", "transformers", "accelerate", "librosa", "opensmile",
            "scikit-learn", "numpy", "pandas", "soundfile")
SMOKE_BANNER = ("**SMOKE PROFILE: the numbers in this report mean nothing.** They come from a generated "
                "corpus and a tiny randomly initialised model, and only show that the pipeline runs.")


def git_commit() -> str:
    """Short commit hash of the repository, with ``-dirty`` when tracked files have changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, text=True,
                                capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               text=True, capture_output=True, check=True).stdout.strip()
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
        "model": profile.describe_model(),
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
    """Write the configuration of a run next to its results, with full provenance (JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**provenance(profile), "config": config or {}}, indent=2, default=str))
    return path
