"""Wall time of ``python -m ser_utils train`` on RAVDESS written as a manifest (1,440 clips, 8 labels, 24
speakers as the speaker column) with whisper-base: cold (a fresh, empty cache: every clip embedded) and warm
(the embeddings in the cache), in one run, each as its own ``python -m ser_utils train`` process. Prints each
run's wall time, the warm/cold ratio, and the grouped-CV UAR of the chosen head beside the study's actor-kfold
UAR of the same head (``reports/results/frozen_heads.csv``; both estimate UAR on unseen speakers, on
different folds).

    python benchmarks/bench_train.py [--data ../shared/data/ravdess-16k] [--heads all|linear]
                                     [--warm-work .cache] [--skip-cold]

The cold run uses a new temporary work root (``SER_WORK_DIR``) and the warm run the same one after it. With
``--skip-cold`` only the warm run, on ``--warm-work``, a work root whose full-profile cache already holds the
embeddings (default: ``.cache``, i.e. ``.cache/full/cache``, where ``make all`` puts them). ``--backbone``: another
encoder (a tiny one checks the script). Say which CPU ran it (``lscpu``) with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from ser_utils.core.config import REPO_ROOT

REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "ravdess-16k"


def write_manifest(data: Path, path: Path) -> Path:
    """The corpus as ``path,label,speaker`` (labels the RAVDESS emotion names, speakers the actors)."""
    from ser_utils.data.corpus import discover

    meta = discover(data)
    table = pd.DataFrame({"path": meta["path"].astype(str), "label": meta["emotion"].astype(str),
                          "speaker": [f"actor{a:02d}" for a in meta["actor"]]})
    table.to_csv(path, index=False)
    return path


def run_train(manifest: Path, out: Path, work: Path, heads: str, backbone: str) -> tuple[float, str]:
    """One ``train`` process under the full profile, ``work`` its work root (``SER_WORK_DIR``): (seconds, stdout)."""
    env = {**os.environ, "SER_PROFILE": "full", "SER_WORK_DIR": str(work), "SER_PROGRESS": "0"}
    start = time.perf_counter()
    command = [sys.executable, "-m", "ser_utils", "train", "--manifest", str(manifest), "--out", str(out),
               "--heads", heads, "--backbone", backbone, "--force"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO_ROOT)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"train failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return seconds, done.stdout


def study_uar(head: str) -> str:
    """The study's mean actor-kfold test UAR of the head ``head`` (its name before any penalty), or why none."""
    path = REPO_ROOT / "reports" / "results" / "frozen_heads.csv"
    if not path.is_file():
        return "no frozen_heads.csv"
    table = pd.read_csv(path)
    name = head.split(" (")[0].split(",")[0]
    rows = table[(table["protocol"] == "actor-kfold") & (table["head"] == name)
                 & (table["system"] == "whisper-selected-frozen")]
    if "penalty" in table.columns and " (" in head:
        rows = rows[rows["penalty"] == float(head.split(" ")[-1].rstrip(")").split(",")[0])]
    return f"{100 * rows['test_uar'].mean():.1f} % over {rows['fold'].nunique()} folds" if len(rows) else "not in it"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REAL_DATA)
    parser.add_argument("--heads", choices=("all", "linear"), default="linear")
    parser.add_argument("--warm-work", type=Path, default=REPO_ROOT / ".cache")
    parser.add_argument("--backbone", default="whisper-base")
    parser.add_argument("--skip-cold", action="store_true", help="only the warm run (the cold one embeds 1,440 clips)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = write_manifest(args.data, tmp / "ravdess.csv")
        runs = {}
        if not args.skip_cold:
            runs["cold"] = run_train(manifest, tmp / "cold", tmp / "work", args.heads, args.backbone)
        warm = tmp / "work" if "cold" in runs else args.warm_work  # after a cold run: its own cache, now full
        runs["warm"] = run_train(manifest, tmp / "warm", warm, args.heads, args.backbone)
        result = json.loads((tmp / "warm" / "evaluation.json").read_text())
    for name, (seconds, stdout) in runs.items():
        cached = next((line for line in stdout.splitlines() if "embeddings:" in line), "")
        print(f"{name}: {seconds:.1f} s  ({cached})")
    if "cold" in runs:
        print(f"warm / cold: {runs['warm'][0] / runs['cold'][0]:.2f}")
    print(f"head chosen: {result['head']}; grouped-CV UAR {100 * result['uar']:.1f} % "
          f"({result['cv']['folds']} speaker-grouped folds, {result['clips']} clips); study's actor-kfold test UAR of "
          f"the same head: {study_uar(result['head'])}")


if __name__ == "__main__":
    main()
