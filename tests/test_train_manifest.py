"""``python -m ser_utils train`` on labelled manifests drawn from the real RAVDESS clips (issue 35): a model
folder that ``predict`` and ``evaluate`` use with the manifest's own labels, and every bad input refused with
one line, status 2 and no folder."""

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from ser_utils.__main__ import main

#: RAVDESS emotion codes of the four classes, in the order the manifests list them first.
CLASSES = {"05": "angry", "03": "happy", "04": "sad", "01": "neutral"}
ACTORS = range(1, 7)


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    from ser_utils.backbones.checkpoints import make_tiny_whisper

    return str(make_tiny_whisper(tmp_path_factory.mktemp("tiny") / "tiny-whisper"))


@pytest.fixture(scope="module")
def clips(ravdess_16k):
    """One clip per class and actor (statement 1, repetition 1, normal intensity): 24 clips, 6 speakers."""
    rows = []
    for actor in ACTORS:
        for code, label in CLASSES.items():
            path = next((ravdess_16k / f"Actor_{actor:02d}").glob(f"03-01-{code}-01-01-01-{actor:02d}.*"))
            rows.append({"path": str(path), "label": label, "speaker": f"actor{actor}"})
    return pd.DataFrame(rows)


@pytest.fixture(autouse=True)
def work_dir(tmp_path_factory, monkeypatch):
    """One cache for the module's runs (a second run reads it), the smoke profile's small grids, no bars."""
    monkeypatch.setenv("SER_WORK_DIR", str(tmp_path_factory.getbasetemp() / "train-work"))
    monkeypatch.setenv("SER_PROFILE", "smoke")
    monkeypatch.setenv("SER_PROGRESS", "0")


def write(table: pd.DataFrame, path) -> str:
    table.to_csv(path, index=False)
    return str(path)


def refused(capsys, args, out) -> str:
    """Run ``train`` expecting a refusal: status 2, one error line, no folder; returns the line."""
    assert main(["train", *map(str, args), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))
    return lines[0]


def test_four_labels_on_a_tiny_backbone_predict_and_evaluate_use_the_folder(tmp_path, clips, tiny_whisper, capsys):
    manifest = write(clips, tmp_path / "four.csv")
    out = tmp_path / "model"
    assert main(["train", "--manifest", manifest, "--out", str(out), "--backbone", tiny_whisper]) == 0
    said = capsys.readouterr().out
    assert "UAR" in said and "speaker-grouped" in said
    result = json.loads((out / "evaluation.json").read_text())
    assert result["labels"] == ["angry", "happy", "sad", "neutral"] and result["clips"] == 24
    assert result["cv"]["grouped_by_speaker"] and result["speakers"] == 6
    assert sum(sum(row.values()) for row in result["confusion"].values()) == 24
    assert set(result) >= {"accuracy", "uar", "macro_f1", "class_counts", "head", "why", "candidates"}
    linear = {c["candidate"].split()[0] for c in result["candidates"]}
    assert linear == {"ridge-all-mean+std", "logreg-all-mean+std", "lda-all-mean+std"}, linear  # the study's heads
    assert "Cross-validated scores" in (out / "README.md").read_text()

    assert main(["predict", *clips["path"][:4], "--model", str(out), "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out)
    assert all(set(p["probabilities"]) == set(CLASSES.values()) for p in predictions)
    scores = tmp_path / "scores.json"
    assert main(["evaluate", "--model", str(out), "--manifest", manifest, "--json", str(scores)]) == 0
    assert json.loads(scores.read_text())["n"] == 24

    # Another head on the same clips embeds nothing again; an existing folder is replaced only with --force.
    assert main(["train", "--manifest", manifest, "--out", str(out), "--backbone", tiny_whisper]) == 2
    assert "already exists" in capsys.readouterr().err and (out / "evaluation.json").is_file()
    assert main(["train", "--manifest", manifest, "--out", str(out), "--backbone", tiny_whisper, "--force",
                 "--labels", "neutral,sad,happy,angry", "--heads", "all"]) == 0
    assert "embeddings: 24 from the cache, 0 computed" in capsys.readouterr().out
    result = json.loads((out / "evaluation.json").read_text())
    assert result["labels"] == ["neutral", "sad", "happy", "angry"]
    assert len({c["candidate"].split()[0] for c in result["candidates"]} - linear) == 2  # and the two MLPs


def test_a_baseline_from_a_manifest_in_another_folder_with_relative_paths(tmp_path, clips, capsys, monkeypatch):
    data = tmp_path / "elsewhere"
    (data / "audio").mkdir(parents=True)
    for path in clips["path"]:
        shutil.copy(path, data / "audio")
    table = clips.drop(columns="speaker").assign(path=[f"audio/{p.split('/')[-1]}" for p in clips["path"]])
    (data / "audio" / "broken.wav").write_bytes(b"not audio")
    table = pd.concat([table, pd.DataFrame([{"path": "audio/broken.wav", "label": "sad"}])])
    manifest = write(table, data / "mine.csv")
    out = tmp_path / "baseline"
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--manifest", manifest, "--out", "baseline", "--features", "egemaps"]) == 0
    captured = capsys.readouterr()
    assert "broken.wav" in captured.err and "optimistic" in captured.out  # listed, skipped; no speakers
    # the folder as the user named it (a notebook's, inside the repository, relative to it): no machine's path
    assert "model folder: baseline (model card: baseline/README.md)" in captured.out
    result = json.loads((out / "evaluation.json").read_text())
    assert result["clips"] == 24 and result["left_out"] == 1 and not result["cv"]["grouped_by_speaker"]
    assert main(["predict", str(data / "audio"), "--model", str(out), "--json"]) == 1  # broken.wav: not scored
    predictions = json.loads(capsys.readouterr().out)
    assert len(predictions) == 24 and {p["emotion"] for p in predictions} <= set(CLASSES.values())
    assert all(list(p["probabilities"]) == list(CLASSES.values()) for p in predictions)


def test_partial_fine_tuning_of_the_top_layer_is_a_folder_predict_and_evaluate_use(tmp_path, clips, tiny_whisper,
                                                                                   capsys):
    manifest = write(clips, tmp_path / "four.csv")
    out = tmp_path / "tuned"
    assert main(["train", "--manifest", manifest, "--out", str(out), "--backbone", tiny_whisper,
                 "--train-layers", "1"]) == 0
    said = capsys.readouterr().out
    assert said.count("held-out UAR") == 4 and "final model: " in said and "for early stopping (speakers " in said
    result = json.loads((out / "evaluation.json").read_text())
    assert result["system"] == "four-whisper-ft-top1" and result["labels"] == ["angry", "happy", "sad", "neutral"]
    assert result["clips"] == 24 and result["cv"]["folds"] == 4 and result["cv"]["grouped_by_speaker"]
    assert sum(sum(row.values()) for row in result["confusion"].values()) == 24
    assert result["head"].startswith("top 1 layer(s) fine-tuned") and "1 epoch(s)" in result["head"]  # smoke sizes
    assert "every clip except its validation clips (speakers " in result["why"]
    assert "except its validation clips" in (out / "README.md").read_text()
    config = json.loads((out / "ser_config.json").read_text())  # the study's exported fine-tuned format
    assert config["format"].startswith("ser_utils.EmotionClassifier") and config["model"]["train_layers"] == 1

    assert main(["predict", *clips["path"][:4], "--model", str(out), "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out)
    assert all(set(p["probabilities"]) == set(CLASSES.values()) for p in predictions)
    scores = tmp_path / "scores.json"
    assert main(["evaluate", "--model", str(out), "--manifest", manifest, "--json", str(scores)]) == 0
    assert json.loads(scores.read_text())["n"] == 24


def test_partial_fine_tuning_refusals_are_one_line_status_2_and_no_folder(tmp_path, clips, tiny_whisper, capsys):
    out, manifest = tmp_path / "tuned", write(clips, tmp_path / "four.csv")
    tune = ["--manifest", manifest, "--backbone", tiny_whisper, "--train-layers"]
    assert "--features egemaps" in refused(capsys, ["--manifest", manifest, "--features", "egemaps",
                                                    "--train-layers", "1"], out)
    assert "--normalize speaker" in refused(capsys, [*tune, "1", "--normalize", "speaker"], out)
    assert "train 1 or more" in refused(capsys, [*tune, "0"], out)
    assert "has 2 layers; choose 1 to 1" in refused(capsys, [*tune, "2"], out)
    # Two speakers: each inner fold trains on one, which cannot also give validation clips.
    two = write(clips.assign(speaker=["a" if s in ("actor1", "actor2", "actor3") else "b" for s in clips["speaker"]]),
                tmp_path / "two-speakers.csv")
    line = refused(capsys, ["--manifest", two, "--backbone", tiny_whisper, "--train-layers", "1"], out)
    assert "1 speaker(s) in a training part" in line


def test_bad_manifests_are_one_line_status_2_and_no_folder(tmp_path, clips, tiny_whisper, capsys):
    out = tmp_path / "model"
    one_class = write(clips.assign(label="angry"), tmp_path / "one-class.csv")
    assert "needs two or more" in refused(capsys, ["--manifest", one_class], out)
    few = clips.drop(clips.index[clips["label"] == "sad"][3:])
    assert "'sad' has 3 usable clip(s)" in refused(capsys, ["--manifest", write(few, tmp_path / "few.csv")], out)
    spelled = clips.assign(label=clips["label"].where(clips.index % 8 != 0, clips["label"].str.title()))
    line = refused(capsys, ["--manifest", write(spelled, tmp_path / "case.csv")], out)
    assert "'angry'" in line and "'Angry'" in line and "differ only in case" in line
    one_speaker = write(clips.assign(speaker="anna"), tmp_path / "one-speaker.csv")
    assert "one speaker" in refused(capsys, ["--manifest", one_speaker], out)
    manifest = write(clips, tmp_path / "ok.csv")
    assert "--labels" in refused(capsys, ["--manifest", manifest, "--labels", "angry,happy,sad"], out)
    no_speakers = write(clips.drop(columns="speaker"), tmp_path / "no-speakers.csv")
    assert "speaker column" in refused(capsys, ["--manifest", no_speakers, "--normalize", "speaker"], out)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("path,label\na.wav,sad,extra\n")
    assert "line 2" in refused(capsys, ["--manifest", ragged], out)
    # Unreadable files are listed and skipped; too few left of a class: refused after reading, nothing written.
    for i in range(24):
        (tmp_path / f"broken{i}.wav").write_bytes(b"not audio")
    sad = clips["label"] == "sad"
    unreadable = clips.assign(path=clips["path"].where(~sad, [str(tmp_path / f"broken{i}.wav") for i in range(24)]))
    line = refused(capsys, ["--manifest", write(unreadable, tmp_path / "unreadable.csv"), "--backbone", tiny_whisper],
                   out)
    assert "'sad' has 0 usable clip(s) (6 file(s) left out)" in line


def _wait_for(run: subprocess.Popen, text: str, timeout: float = 600.0) -> str:
    """What the run wrote to stderr until ``text`` appeared (tqdm draws its bar without a newline). The
    timeout is generous: on a loaded 2-core machine the imports alone took over two minutes."""
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline and run.poll() is None:
        if select.select([run.stderr], [], [], 1.0)[0]:
            seen += os.read(run.stderr.fileno(), 4096).decode(errors="replace")
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_embedding_is_one_line_and_leaves_no_folder(tmp_path, ravdess_16k, tiny_whisper, signum,
                                                                   status):
    # Every clip of the four classes of 8 actors (224 clips, a fresh cache): still embedding seconds later.
    paths = [p for a in range(1, 9) for p in sorted((ravdess_16k / f"Actor_{a:02d}").glob("03-01-0[1345]-*"))]
    labels = [CLASSES[p.name.split("-")[2]] for p in paths]
    manifest = write(pd.DataFrame({"path": map(str, paths), "label": labels}), tmp_path / "many.csv")
    out = tmp_path / "model"
    env = {**os.environ, "SER_WORK_DIR": str(tmp_path / "work"), "SER_PROFILE": "smoke", "SER_PROGRESS": "1"}
    run = subprocess.Popen([sys.executable, "-m", "ser_utils", "train", "--manifest", manifest, "--out", str(out),
                            "--backbone", tiny_whisper], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    seen = _wait_for(run, "embeddings")
    assert "embeddings" in seen and run.poll() is None, seen
    run.send_signal(signum)
    out_text, err = run.communicate(timeout=120)
    err = seen + err.decode()
    name = signal.Signals(signum).name
    lines = [line for line in re.split(r"[\r\n]", err) if line.startswith("error:")]
    assert run.returncode == status, err
    assert lines == [f"error: interrupted ({name}); no model folder written"], err
    assert "Traceback" not in err and "embeddings:" not in out_text.decode()  # stopped while embedding
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.csv", "work"]  # no folder, no .model.partial-*


@pytest.mark.slow
def test_a_signal_while_fine_tuning_leaves_no_folder_and_no_checkpoints(tmp_path, clips, tiny_whisper):
    manifest, out, scratch = write(clips, tmp_path / "four.csv"), tmp_path / "tuned", tmp_path / "tmp"
    scratch.mkdir()
    # The module's cache (work_dir): the clips' states are there when the other tests ran first.
    env = {**os.environ, "SER_PROGRESS": "0", "TMPDIR": str(scratch)}  # TMPDIR: where the checkpoints are kept
    run = subprocess.Popen([sys.executable, "-m", "ser_utils", "train", "--manifest", manifest, "--out", str(out),
                            "--backbone", tiny_whisper, "--train-layers", "1"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env)
    seen = ""
    deadline = time.monotonic() + 600
    while "inner fold 1/4" not in seen and time.monotonic() < deadline and run.poll() is None:
        if select.select([run.stdout], [], [], 0.2)[0]:
            seen += os.read(run.stdout.fileno(), 4096).decode(errors="replace")
    assert "inner fold 1/4" in seen and run.poll() is None, seen
    assert any(p.name.startswith("ser-train-") for p in scratch.iterdir())  # training: its checkpoints are there
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    lines = [line for line in err.decode().splitlines() if line.startswith("error:")]
    assert run.returncode == 130 and lines == ["error: interrupted (SIGINT); no model folder written"], err
    assert not any(p.name.startswith("ser-train-") for p in scratch.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["four.csv", "tmp"]  # no folder, no .partial


def test_train_from_python_is_the_command_and_the_notebook_table_puts_both_estimates_side_by_side(
        tmp_path, clips, tiny_whisper, capsys):
    from ser_utils.cli.train import train_model
    from ser_utils.core.config import display_path
    from ser_utils.study import manifest_workflow
    from ser_utils.study.manifest_training import TrainingError

    manifest, out = write(clips, tmp_path / "four.csv"), tmp_path / "model"
    trained = train_model(manifest, out, backbone=tiny_whisper)
    assert trained == json.loads((out / "evaluation.json").read_text()) and trained["clips"] == 24
    said = capsys.readouterr().out  # a notebook's report names the folder relative to the repository
    assert f"model folder: {display_path(out)} " in said and f" {out}" not in said
    with pytest.raises(TrainingError, match="already exists"):  # a refusal is the command's line, raised
        train_model(manifest, out, backbone=tiny_whisper)
    table = manifest_workflow.side_by_side(trained, manifest_workflow.score_folder(out, manifest))
    assert list(table["clips"]) == [24, 24] and table["UAR %"].iloc[0] == round(100 * trained["uar"], 1)
