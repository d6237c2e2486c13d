"""Progress bars: tqdm (widgets in JupyterLab, text in a terminal), switched off in headless runs.

The pipeline behind ``make all`` sets ``SER_PROGRESS=0`` (and Hugging Face's own switch), so rendered
reports hold results rather than thousands of bar redraws.
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm

HEADLESS_ENV = {"SER_PROGRESS": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def enabled() -> bool:
    return os.environ.get("SER_PROGRESS", "1") != "0"


def progress(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)``, disabled when ``SER_PROGRESS=0`` (or when ``disable=True``)."""
    kwargs["disable"] = kwargs.get("disable", False) or not enabled()
    return tqdm(iterable, **kwargs)
