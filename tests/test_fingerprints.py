"""Nothing stale: caches follow the code that made them, the pipeline notices a changed corpus or
backbone, ``--dry-run`` says why, and ``FORCE=1`` recomputes everything (folds too, unless kept)."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from ser_utils.backbones.checkpoints import make_tiny_wav2vec2, make_tiny_whisper
from ser_utils.cli.pipeline import fingerprint_parts, run_pipeline, stale_reasons
from ser_utils.core.cache import ArrayCache, cached_map
from ser_utils.core.config import KEEP_FOLDS_ENV, RECOMPUTE_ENV, display_path, get_profile
from ser_utils.core.fingerprint import code_digest
from ser_utils.data import audio
from ser_utils.data.synthetic import make_synthetic_corpus
from ser_utils.features import base, egemaps, make_extractor, mfcc_set


def _module(path, source):
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_code_digest_follows_statements_not_comments(tmp_path):
    base = code_digest(_module(tmp_path / "m.py", '"""Doc."""\ndef f(x):\n    return x * 2\n'))
    reworded = code_digest(_module(tmp_path / "m.py",
                                   '"""Other doc."""\n\n# why\ndef f(x):\n    """Twice x."""\n    return x*2\n'))
    changed = code_digest(_module(tmp_path / "m.py", '"""Doc."""\ndef f(x):\n    return x * 3\n'))
    assert reworded == base and changed != base


@pytest.mark.parametrize("name, module", [("egemaps", egemaps), ("mfcc-set", mfcc_set)])
def test_feature_cache_keys_carry_the_extractor_code(name, module):
    params = make_extractor(name).cache_params()
    # An edit to the feature set's module, the shared base or the audio loader is a new cache folder.
    assert params["code"] == code_digest(audio, base, module)


@pytest.fixture
def smoke(monkeypatch, tmp_path):
    monkeypatch.setenv("SER_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("SER_REPORTS_DIR", str(tmp_path / "reports"))
    return get_profile("smoke")


def test_the_fingerprint_follows_the_corpus_listing_and_the_backbone_weights(smoke, tmp_path):
    corpus = make_synthetic_corpus(smoke.data_dir, actors=[1], seconds=0.3)
    before = fingerprint_parts(smoke, "04_pretrained_encoders", {}, "")
    # No absolute path (relative to the repository), also before the tiny model exists.
    assert not any(os.path.isabs(word) for value in before.values() for word in value.split())
    clip = next(corpus.rglob("*.wav"))
    shutil.copy(clip, corpus / "Actor_01" / "03-01-01-01-01-01-02.wav")  # a clip of another actor appears
    added = fingerprint_parts(smoke, "04_pretrained_encoders", {}, "")
    data, rate = sf.read(str(clip))
    sf.write(str(clip), data * 0.5, rate)  # one clip edited
    os.utime(clip, ns=(time.time_ns(), time.time_ns() + 10**9))
    edited = fingerprint_parts(smoke, "04_pretrained_encoders", {}, "")
    assert len({before["data"], added["data"], edited["data"]}) == 3
    assert before["backbone"] == added["backbone"] == smoke.describe_backbones()

    model = smoke.backbones[0]
    make_tiny_wav2vec2(model)
    first = fingerprint_parts(smoke, "04_pretrained_encoders", {}, "")["backbone"]
    assert first.startswith("tiny-wav2vec2@")
    assert first == fingerprint_parts(smoke, "04_pretrained_encoders", {}, "")["backbone"]
    make_tiny_wav2vec2(model + "-other", seed=1)
    shutil.rmtree(model)
    shutil.move(model + "-other", model)
    second = fingerprint_parts(smoke, "04_pretrained_encoders", {}, "")["backbone"]
    assert second != first
    make_tiny_whisper(smoke.backbones[1])  # the second backbone counts too
    assert fingerprint_parts(smoke, "04_pretrained_encoders", {}, "")["backbone"] not in (first, second)
    assert "backbone" not in fingerprint_parts(smoke, "03_baselines", {}, "")  # only 04 loads it


def test_stale_reasons_name_what_changed(tmp_path):
    stamp, html = tmp_path / "n.stamp", tmp_path / "n.html"
    parts = {"notebook": "a", "code": "b", "parameters": "{}", "data": "c", "upstream": ""}
    assert stale_reasons(stamp, html, parts) == ["not run yet"]
    stamp.write_text(json.dumps({"parts": parts}))
    assert stale_reasons(stamp, html, parts) == [f"its report {display_path(html)} is missing"]
    html.write_text("report")
    assert stale_reasons(stamp, html, parts) == []
    assert stale_reasons(stamp, html, {**parts, "data": "d", "code": "x"}) == [
        "ser_utils code changed", "the corpus changed (files added, removed or edited)"]
    stamp.write_text("0123abcd")  # a stamp of the earlier format
    assert stale_reasons(stamp, html, parts) == ["recorded by an older version of the pipeline"]


@pytest.mark.slow
def test_dry_run_lists_what_would_run_and_why(smoke, tmp_path, capsys):
    done = subprocess.run([sys.executable, "-m", "ser_utils", "pipeline", "--profile", "smoke", "--only", "01", "02",
                           "--dry-run"], capture_output=True, text=True, env=os.environ)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[01_download] would run: not run yet", "[02_eda] would run: not run yet"]
    assert not (tmp_path / "reports").exists()  # nothing ran

    def dry_run():
        steps = run_pipeline("smoke", only=["01"], dry_run=True)
        return steps[0].status, capsys.readouterr().out.strip()

    assert [s.status for s in run_pipeline("smoke", only=["01"])] == ["ran"]
    capsys.readouterr()
    # The corpus 01 generated is part of what it recorded: a second smoke run skips it.
    assert dry_run() == ("skipped", "[01_download] unchanged, would be skipped")
    next(smoke.data_dir.rglob("*.wav")).unlink()
    assert dry_run() == ("would run", "[01_download] would run: the corpus changed (files added, removed or edited)")
    assert run_pipeline("smoke", only=["01"], force=True, dry_run=True)[0].status == "would run"
    assert "would run: FORCE; the corpus changed" in capsys.readouterr().out


def test_force_recomputes_cached_arrays_made_before_the_run(monkeypatch, tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(b"content")
    cache = ArrayCache(tmp_path / "cache", "test", {})
    calls = []

    def compute(path):
        calls.append(path)
        return np.ones(2)

    cached_map(compute, [source], cache, progress=False)
    cached_map(compute, [source], cache, progress=False)
    assert len(calls) == 1
    monkeypatch.setenv(RECOMPUTE_ENV, repr(time.time() + 1))  # the forced run starts after the entry was made
    monkeypatch.setenv(KEEP_FOLDS_ENV, "1")  # keeps folds only: caches are recomputed all the same
    cached_map(compute, [source], cache, progress=False)
    assert len(calls) == 2


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(make_tiny_wav2vec2(tmp_path_factory.mktemp("tiny")))


def test_force_retrains_finished_folds_unless_kept(monkeypatch, synthetic_meta, tiny_dir, tmp_path):
    from ser_utils.data.audio import load_many
    from ser_utils.evaluation.splits import make_splits
    from ser_utils.models.heads import ModelConfig
    from ser_utils.study.finetuning import finetune_predictions
    from ser_utils.training.loop import TrainConfig

    meta = synthetic_meta[synthetic_meta["actor"] <= 8]
    waves, _ = load_many(meta["path"])
    split = make_splits(meta, "actor-kfold")[0]
    config = TrainConfig(epochs=1, batch_size=16, max_seconds=0.3, patience=1)

    def train():
        return finetune_predictions(meta, [split], tiny_dir, ModelConfig(), config, tmp_path, "ft", waves,
                                    progress=False)[1][0]

    assert train() is not None and train() is None  # trained, then reused
    monkeypatch.setenv(RECOMPUTE_ENV, repr(time.time() + 1))
    monkeypatch.setenv(KEEP_FOLDS_ENV, "1")
    assert train() is None  # FORCE=1 KEEP_FOLDS=1: the finished fold is kept
    monkeypatch.delenv(KEEP_FOLDS_ENV)
    assert train() is not None  # FORCE=1: trained again


def test_a_backbone_folders_fingerprint_follows_its_weights_within_one_process(tmp_path):
    """Digested once per process for the same files, and again as soon as a weight file changes."""
    import os

    from ser_utils.backbones import backbone_fingerprint
    from ser_utils.backbones.checkpoints import make_tiny_wav2vec2

    folder = make_tiny_wav2vec2(tmp_path / "tiny")
    first = backbone_fingerprint(str(folder))
    assert backbone_fingerprint(str(folder)) == first
    weights = folder / "pytorch_model.bin"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    assert backbone_fingerprint(str(folder)) != first
