"""predict / evaluate / validate on what users' folders and manifests really hold: honest adaptation
groups, degenerate audio, impossible windows, outputs that would destroy inputs, a full disk, other
audio formats, deep trees, misfiled clips and the messages for each (in this process, through ``main``)."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ser_utils.__main__ import main
from ser_utils.data.corpus import EMOTIONS
from ser_utils.data.synthetic import synthesize_clip
from ser_utils.features import make_extractor
from ser_utils.models.baseline import BaselineModel
from ser_utils.models.classifiers import make_classifier
from ser_utils.serving.predict import EmotionRecognizer


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """An eGeMAPS + logreg model folder (pipeline fitted on random features: fast; min_seconds 0.5)."""
    extractor = make_extractor("egemaps")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(80, extractor.n_features)), np.array(EMOTIONS * 10)
    folder = tmp_path_factory.mktemp("baseline") / "egemaps"
    BaselineModel(extractor, make_classifier("logreg", None, probability=True).fit(X, y),
                  classifier="logreg").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Four 1 s clips of two speakers: spk1/{sad,angry}.wav, spk2/{happy,calm}.wav."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    for speaker, emotions in (("spk1", ("sad", "angry")), ("spk2", ("happy", "calm"))):
        (root / speaker).mkdir()
        for emotion in emotions:
            sf.write(str(root / speaker / f"{emotion}.wav"), synthesize_clip(emotion, 3, seconds=1.0, rng=rng), 16000)
    return root


def run(capsys, *args):
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err.strip().splitlines()


def _manifest(path, text):
    path.write_text(text)
    return path


# -- adaptation groups ------------------------------------------------------------------------------------

def test_empty_speaker_cells_are_an_error_naming_the_lines_before_scoring(capsys, baseline, clips, tmp_path):
    rows = [("spk1/sad.wav", "sad", "a"), ("spk1/angry.wav", "angry", ""), ("spk2/happy.wav", "happy", " "),
            ("missing.wav", "calm", "a")]
    some = _manifest(clips / "some.csv", "path,label,speaker\n" + "".join(f"{p},{e},{s}\n" for p, e, s in rows))
    status, out, err = run(capsys, "evaluate", "--model", baseline, "--manifest", some, "--adapt", "speaker")
    # missing.wav was never read: the grouping was refused before any file was scored
    assert status == 2 and not out and len(err) == 1
    assert err[0].startswith(f"error: --adapt: {some}: speaker adaptation needs a speaker on every row; 2 have none "
                             "(line(s) 3, 4)")
    none = _manifest(clips / "none.csv", "path,label,speaker\nspk1/sad.wav,sad,\nspk1/angry.wav,angry,\n"
                                         "spk2/happy.wav,happy,\n")
    status, out, err = run(capsys, "evaluate", "--model", baseline, "--manifest", none, "--adapt", "speaker")
    assert status == 2 and not out and "3 have none (line(s) 2, 3, 4)" in err[0]
    # the same manifest under --adapt corpus is scored: it was the speaker grouping that was refused
    assert run(capsys, "evaluate", "--model", baseline, "--manifest", none, "--adapt", "corpus")[0] == 0


def test_paths_without_a_speaker_are_all_named(capsys, baseline, clips):
    status, out, err = run(capsys, "predict", clips, "--model", baseline, "--adapt", "speaker",
                           "--speaker-pattern", r"spk(1)?/")  # spk2/ matches with an empty group
    assert status == 2 and not out and len(err) == 1
    assert "finds no speaker in 2 of 4 path(s)" in err[0]
    assert "spk2/calm.wav" in err[0] and "spk2/happy.wav" in err[0] and "spk1" not in err[0].split("path(s)")[1]


def test_a_file_named_three_times_is_one_clip_of_its_group(capsys, baseline, clips, tmp_path):
    sad = clips / "spk1" / "sad.wav"
    link = tmp_path / "link.wav"
    link.symlink_to(sad)
    status, out, err = run(capsys, "predict", sad, clips / "spk1" / ".." / "spk1" / "sad.wav", link,
                           "--model", baseline, "--adapt", "corpus")
    assert status == 2 and not out
    assert err == [f"warning: {sad}: given 3 times (named again, inside a folder also given, or through a link); "
                   "scored once",
                   "error: --adapt: group 'corpus' has 1 clip(s); its statistics need at least 3: group more files "
                   "together (more per speaker, or the whole corpus as one group)"]
    manifest = _manifest(clips / "thrice.csv", "path,label,speaker\nspk1/sad.wav,sad,a\n./spk1/sad.wav,sad,a\n"
                                               f"{link},sad,a\n")
    status, _, err = run(capsys, "evaluate", "--model", baseline, "--manifest", manifest, "--adapt", "speaker")
    assert status == 2 and err[0] == f"warning: {manifest}: 2 repeated row(s) (lines 3, 4) are scored once"
    assert "group 'a' has 1 clip(s)" in err[1]
    # three different files do make a group
    assert run(capsys, "predict", clips, "--model", baseline, "--adapt", "corpus")[0] == 0


# -- degenerate audio -------------------------------------------------------------------------------------

def test_a_constant_signal_is_silent_and_a_file_far_above_full_scale_warns(capsys, baseline, clips, tmp_path):
    sf.write(str(tmp_path / "dc.wav"), np.full(16000, 0.5, np.float32), 16000, subtype="FLOAT")
    speech = synthesize_clip("happy", 3, seconds=1.0, rng=np.random.default_rng(1))
    loud = tmp_path / "x1000.wav"
    sf.write(str(loud), speech * 1000, 16000, subtype="FLOAT")  # a float WAV never scaled to [-1, 1]
    csv, out_json = tmp_path / "out.csv", tmp_path / "out.json"
    status, out, err = run(capsys, "predict", tmp_path / "dc.wav", loud, clips / "spk1" / "sad.wav",
                           "--model", baseline, "--csv", csv, "--json", out_json)
    assert status == 1 and out.count("\n") == 2  # the constant file is not scored ("calm 1.000" before)
    assert err[0] == (f"error: {tmp_path / 'dc.wav'}: silent (peak amplitude below 1e-05 once its mean, the DC "
                      "offset, is removed)")
    assert len(err) == 2 and err[1].startswith(f"warning: {loud}: peak amplitude ") and "above full scale" in err[1]
    table = pd.read_csv(csv, keep_default_na=False)
    assert (table.loc[table["file"] == str(loud), "warning"] == err[1][len("warning: "):]).all()
    assert (table.loc[table["file"] != str(loud), "warning"] == "").all()
    warnings = {r["file"]: r["warning"] for r in json.loads(out_json.read_text())}
    assert warnings == {str(loud): err[1][len("warning: "):], str(clips / "spk1" / "sad.wav"): None}


def test_evaluate_names_the_files_far_above_full_scale_too(capsys, baseline, clips, tmp_path):
    loud = tmp_path / "x1000.wav"
    sf.write(str(loud), 1000 * sf.read(str(clips / "spk1" / "sad.wav"))[0], 16000, subtype="FLOAT")
    manifest = _manifest(tmp_path / "m.csv", f"path,label\n{loud},sad\n{clips / 'spk1' / 'angry.wav'},angry\n")
    summary = tmp_path / "s.json"
    status, out, err = run(capsys, "evaluate", "--model", baseline, "--manifest", manifest, "--json", summary)
    assert status == 0 and "clips: 2" in out and len(err) == 1 and err[0].startswith(f"warning: {loud}: peak amplitude")
    assert json.loads(summary.read_text())["warnings"] == [err[0][len("warning: "):]]


# -- impossible windows -----------------------------------------------------------------------------------

def test_the_models_shortest_input_is_a_plain_attribute(baseline, model_dir):
    assert EmotionRecognizer.from_pretrained(baseline).min_seconds == 0.5  # the eGeMAPS extractor's
    assert EmotionRecognizer.from_pretrained(model_dir).min_seconds == 400 / 16000  # one wav2vec2 frame


def test_a_window_or_hop_no_file_can_satisfy_is_exit_2_before_any_work(capsys, baseline, model_dir, clips, tmp_path):
    missing = tmp_path / "missing.wav"  # its error line would show that files were being read
    for model, window, shortest in ((baseline, "0.3", "0.5"), (model_dir, "1e-09", "0.025")):
        status, out, err = run(capsys, "predict", clips, missing, "--model", model, "--window", window, "--hop", 0.1)
        assert status == 2 and not out
        assert err == [f"error: --window {window} is shorter than the model's shortest input ({shortest} s): no "
                       "window could be scored"]
    status, _, err = run(capsys, "predict", clips, missing, "--model", model_dir, "--hop", "1e-9")
    assert status == 2 and err == ["error: --hop 1e-09 is shorter than one sample at the model's 16000 Hz"]
    # 0.3 s is enough for wav2vec2: the limit is the loaded model's, not a fixed number
    status, out, _ = run(capsys, "predict", clips, "--model", model_dir, "--window", 0.3, "--hop", 0.3)
    assert status == 0 and out.count("\n") == 4


# -- outputs ----------------------------------------------------------------------------------------------

def test_outputs_naming_an_input_or_each_other_are_refused_before_any_work(capsys, clips, tmp_path):
    sad = clips / "spk1" / "sad.wav"
    manifest = _manifest(tmp_path / "m.csv", f"path,label\n{sad},sad\n")
    (tmp_path / "alias.csv").symlink_to(tmp_path / "scores.json")
    os.link(sad, tmp_path / "hard.wav")
    before = {p: p.read_bytes() for p in (sad, manifest)}
    nowhere = tmp_path / "no-model"  # the checks come before the model is loaded
    cases = [(["predict", sad], ["--csv", sad], f"--csv {sad}: is an input of this run"),
             (["predict", clips], ["--json", clips / "spk2" / "calm.wav"], "is an input of this run"),
             (["predict", sad], ["--csv", tmp_path / "hard.wav"], f"(the same file as {sad})"),
             (["predict", sad], ["--csv", tmp_path / "x", "--json", tmp_path / "x"], "are the same file"),
             (["predict", sad], ["--csv", tmp_path / "alias.csv", "--json", tmp_path / "scores.json"],
              "are the same file"),
             (["evaluate", "--manifest", manifest], ["--json", manifest], f"--json {manifest}: is an input"),
             (["evaluate", "--manifest", manifest], ["--json", sad], f"--json {sad}: is an input")]
    for command, outputs, message in cases:
        status, out, err = run(capsys, *command, "--model", nowhere, *outputs)
        assert status == 2 and not out and len(err) == 1 and message in err[0], err
    assert {p: p.read_bytes() for p in before} == before and not (tmp_path / "x").exists()


def test_an_output_may_not_replace_a_file_of_the_model_folder(capsys, baseline, clips):
    sad = clips / "spk1" / "sad.wav"
    files = {p: p.read_bytes() for p in baseline.rglob("*") if p.is_file()}
    for target in files:
        status, out, err = run(capsys, "predict", sad, "--model", baseline, "--csv", target)
        assert status == 2 and not out and len(err) == 1 and f"--csv {target}: is an input of this run" in err[0]
    assert {p: p.read_bytes() for p in files} == files


def test_a_full_disk_is_one_line_keeps_the_old_file_and_still_writes_the_other(capsys, model_dir, clips, tmp_path,
                                                                               full_disk):
    full = tmp_path / "full"
    full.mkdir()
    csv, out_json = full / "scores.csv", tmp_path / "scores.json"
    csv.write_text("old,complete\n")
    full_disk(full)
    status, out, err = run(capsys, "predict", clips, "--model", model_dir, "--csv", csv, "--json", out_json)
    assert status == 1 and out.count("\n") == 4  # every file was scored and printed
    assert err == [f"error: {csv}: not written (No space left on device); any earlier file there is left as it was"]
    assert csv.read_text() == "old,complete\n" and sorted(os.listdir(full)) == ["scores.csv"]
    assert len(json.loads(out_json.read_text())) == 4


def test_nothing_scored_writes_a_header_only_table_and_says_so(capsys, model_dir, tmp_path):
    sf.write(str(tmp_path / "silent.wav"), np.zeros(16000), 16000)
    csv, out_json = tmp_path / "none.csv", tmp_path / "none.json"
    status, out, err = run(capsys, "predict", tmp_path / "silent.wav", "--model", model_dir, "--csv", csv,
                           "--json", out_json)
    assert status == 1 and not out
    assert err[-1] == f"warning: no file could be scored: --csv {csv} holds the header row only; --json {out_json} " \
                      "holds an empty list"
    table = pd.read_csv(csv)
    assert table.empty and list(table.columns) == ["file", "row", "start", "end", "silent", "emotion", "warning",
                                                   *EMOTIONS]
    assert json.loads(out_json.read_text()) == []


# -- folders and names ------------------------------------------------------------------------------------

def test_a_folder_of_other_formats_is_found(capsys, model_dir, tmp_path):
    wave = synthesize_clip("sad", 3, seconds=0.5, rng=np.random.default_rng(2))
    formats = {"a.aif": ("AIFF", "PCM_16"), "b.aiff": ("AIFF", "PCM_16"), "c.snd": ("AU", "PCM_16"),
               "d.caf": ("CAF", "PCM_16"), "e.w64": ("W64", "PCM_16"), "f.oga": ("OGG", "VORBIS"),
               "g.sph": ("NIST", "PCM_16"), "h.au": ("AU", "PCM_16")}
    for name, (container, subtype) in formats.items():
        sf.write(str(tmp_path / name), wave, 16000, format=container, subtype=subtype)
    (tmp_path / "notes.txt").write_text("not audio")
    status, out, err = run(capsys, "predict", tmp_path, "--model", model_dir)
    assert status == 0 and not err
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(tmp_path / n) for n in sorted(formats)]


def test_tabs_and_newlines_in_names_are_escaped_in_stdout_and_stderr_lines(capsys, model_dir, clips, tmp_path):
    odd = tmp_path / "two\twords\nline.wav"
    odd.write_bytes((clips / "spk1" / "sad.wav").read_bytes())
    status, out, _ = run(capsys, "predict", odd, "--model", model_dir)
    fields = out.rstrip("\n").split("\t")
    assert status == 0 and out.count("\n") == 1 and len(fields) == 3
    assert fields[0] == str(tmp_path) + "/two\\twords\\nline.wav"
    broken = tmp_path / "broken\nname\x1b.wav"
    broken.write_bytes(b"not audio")
    status, out, err = run(capsys, "predict", odd, broken, "--model", model_dir)
    assert status == 1 and out.count("\n") == 1  # the good file is still scored
    assert len(err) == 1 and err[0].startswith("error: ") and "broken\\nname\\x1b.wav" in err[0]


def test_manifest_headers_ragged_rows_and_folder_rows(capsys, baseline, clips, tmp_path):
    sad = clips / "spk1" / "sad.wav"
    for header in ("Path,Label", " path , label ", "PATH,LABEL"):
        manifest = _manifest(tmp_path / "h.csv", f"{header}\n{sad},sad\n")
        status, out, err = run(capsys, "evaluate", "--model", baseline, "--manifest", manifest)
        assert status == 0 and "clips: 1" in out and not err, (header, err)
    for header, rows, line, cells in (("path,label", f"{sad},sad\n{sad},sad,extra\n", 3, 3),
                                      ("path,label", f"{sad},sad,extra,more\n{sad},sad\n", 2, 4),  # pandas would
                                      # index by the extras; fewer cells, pandas would fill them with nothing:
                                      ("path,label,speaker", f"{sad},sad,spk1\n{sad},sad\n", 3, 2),
                                      ("path,label", f"{sad},sad\n\n{sad}\n", 4, 1)):
        ragged = _manifest(tmp_path / "ragged.csv", f"{header}\n{rows}")
        status, out, err = run(capsys, "evaluate", "--model", baseline, "--manifest", ragged)
        assert status == 2 and not out
        assert err == [f"error: {ragged} line {line}: {cells} cells where the header has {header.count(',') + 1} (a "
                       "cell holding a comma needs quotes)"]
    folder = _manifest(tmp_path / "folder.csv", f"path,label\n{clips / 'spk1'},sad\n{sad},sad\n")
    status, _, err = run(capsys, "evaluate", "--model", baseline, "--manifest", folder)
    assert status == 1 and err == [f"error: {clips / 'spk1'}: is a folder, not an audio file"]


def _deep_tree(root, depth):
    """The folders of ``root/d/d/.../d`` (``depth`` levels), made without recursion (``os.makedirs`` recurses)."""
    folders, current = [], root
    for _ in range(depth):
        current = current / "d"
        current.mkdir()
        folders.append(current)
    return folders


def _remove(folders):
    for folder in reversed(folders):
        for entry in os.listdir(folder):
            if not (folder / entry).is_dir():
                (folder / entry).unlink()
        folder.rmdir()


def test_a_folder_tree_1000_levels_deep(capsys, model_dir, clips, tmp_path):
    (tmp_path / "tree").mkdir()
    folders = _deep_tree(tmp_path / "tree", 1000)
    try:
        bottom = folders[-1] / "03-01-04-01-01-01-01.wav"  # longer than libsndfile's 1,024-character limit
        bottom.write_bytes((clips / "spk1" / "sad.wav").read_bytes())
        beside = clips / "spk1" / "sad.wav"
        status, out, err = run(capsys, "predict", tmp_path / "tree", beside, "--model", model_dir)
        assert status == 0 and not err
        assert [line.split("\t")[0] for line in out.splitlines()] == [str(bottom), str(beside)]
        status, out, err = run(capsys, "validate", tmp_path / "tree")
        assert status == 0 and "clips: 1 (expected 1440)" in out
    finally:
        _remove(folders)


def test_validate_reports_a_clip_in_another_actors_folder_in_plain_lines(capsys, clips, tmp_path):
    actor = tmp_path / "Actor_02"
    actor.mkdir()
    for stem in ("03-01-04-01-01-01-02", "03-01-04-01-01-02-05", "not-a-ravdess-name"):
        (actor / f"{stem}.wav").write_bytes((clips / "spk1" / "sad.wav").read_bytes())
    status, out, err = run(capsys, "validate", tmp_path)
    assert status == 0
    assert "named for another actor than their Actor_XX folder: 1, e.g. Actor_02/03-01-04-01-01-02-05.wav (in the " \
           "folder of actor 02)" in out
    assert err == [f"warning: {tmp_path}: skipped 1 file(s):", "  Actor_02/not-a-ravdess-name.wav: not a RAVDESS file "
                   "name (expected seven two-digit fields like 03-01-05-02-01-01-12)",
                   f"warning: {tmp_path}: 1 clip(s) named for another actor than their Actor_XX folder:",
                   "  Actor_02/03-01-04-01-01-02-05.wav: in the folder of actor 02"]
