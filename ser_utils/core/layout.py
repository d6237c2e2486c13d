"""The layout of a results folder: the one owner of every path in it (:class:`ResultsFolder`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


@dataclass(frozen=True)
class ResultsFolder:
    """The layout of a results folder (``reports/results``): the one owner of every path in it.

    ``metrics/<group>.csv`` (fold metrics), ``predictions/<system>.csv`` (per-clip predictions),
    ``splits/<name>.json``, ``<name>_run.json`` (a run's configuration), ``<group>_selection.csv``
    (validation choices), and one file per table (:data:`TABLES`).
    """

    root: Path
    #: One file per table: key -> file name.
    TABLES: ClassVar[dict[str, str]] = {
        "families": "baselines_families.csv", "enrolment": "enrolment_curve.csv",
        "input_modes": "whisper_input_modes.csv",
        **{key: f"{key}.csv" for key in ("corpus", "cross_corpus", "layer_probe", "frozen_heads", "frozen_selection",
                                          "finetune_selection", "training_curves", "comparison", "headline")},
        "provenance": "provenance.json"}

    @classmethod
    def find(cls, folder: str | os.PathLike) -> ResultsFolder:
        """The results folder ``folder`` is, or the one inside it (a reports folder holds ``results/``)."""
        folder = Path(folder)
        inner = folder / "results"
        held = (folder / cls.TABLES["comparison"]).is_file() or (folder / "metrics").is_dir()
        return cls(inner if not held and inner.is_dir() else folder)

    def table(self, key: str) -> Path:
        return self.root / self.TABLES[key]

    @property
    def metrics_dir(self) -> Path:
        return self.root / "metrics"

    def metrics(self, group: str) -> Path:
        return self.metrics_dir / f"{group}.csv"

    @property
    def predictions_dir(self) -> Path:
        return self.root / "predictions"

    def predictions(self, system: str) -> Path:
        return self.predictions_dir / f"{system}.csv"

    def splits(self, name: str) -> Path:
        return self.root / "splits" / f"{name}.json"

    def run_info(self, name: str) -> Path:
        return self.root / f"{name}_run.json"

    def selection(self, group: str) -> Path:
        return self.root / f"{group}_selection.csv"
