"""The fine-tune command under `accelerate launch` with two CPU processes (gloo), against one process."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pandas as pd
import pytest

from ser_utils.backbones.checkpoints import make_tiny_checkpoint
from ser_utils.core.config import REPO_ROOT
from ser_utils.data.synthetic import make_synthetic_corpus


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def finetune(tmp_path, name: str, batch_size: int, launcher: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "SER_WORK_DIR": str(tmp_path / "work"),
           "SER_REPORTS_DIR": str(tmp_path / name), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "ACCELERATE_USE_CPU": "true"}
    args = ["-m", "ser_utils", "finetune", "--profile", "full", "--data", str(tmp_path / "corpus"),
            "--backbone", str(tmp_path / "tiny"), "--recipe", "original", "--folds", "1", "--epochs", "1",
            "--batch-size", str(batch_size), "--out", str(tmp_path / name / "models")]
    return subprocess.run(launcher + args, env=env, capture_output=True, text=True, timeout=300)


def files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
def test_two_processes_write_the_same_files_once(tmp_path):
    make_synthetic_corpus(tmp_path / "corpus", actors=range(1, 7), seconds=0.5)  # fold 1 tests actor 1
    make_tiny_checkpoint(tmp_path / "tiny", formats=("bin",))
    single = finetune(tmp_path, "single", 8, [sys.executable])
    assert single.returncode == 0, single.stderr[-2000:]

    # The two processes start from a stale fold folder (other settings): the main process alone
    # clears it, and the other waits instead of training into a folder being deleted.
    shutil.copytree(tmp_path / "single" / "models", tmp_path / "two" / "models")
    launch = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    two = finetune(tmp_path, "two", 4, launch)
    assert two.returncode == 0, two.stderr[-2000:]

    assert files(tmp_path / "two") == files(tmp_path / "single")
    fold = tmp_path / "two" / "models" / "w2v2-original-ft" / "actor-kfold" / "fold1"
    assert json.loads((fold / "done.json").read_text())["training"]["batch_size"] == 4  # trained again
    assert [json.loads(line)["epoch"] for line in (fold / "log.jsonl").read_text().splitlines()] == [1]
    predictions = pd.read_csv(tmp_path / "two" / "results" / "predictions" / "w2v2-original-ft.csv")
    assert len(predictions) == 60 and predictions["stem"].is_unique  # actor 1's clips, once each
    metrics = pd.read_csv(tmp_path / "two" / "results" / "metrics" / "w2v2-original-ft.csv")
    assert len(metrics) == 1 and metrics["n_test"].item() == 60
    assert two.stdout.count("n_test") == 1 and two.stdout.count("backbone tensors loaded") == 1
