"""Fine-tuning and frozen-embedding modes on the synthetic corpus with a tiny random wav2vec2."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from ser_utils.__main__ import main
from ser_utils.backbones import backbone_fingerprint
from ser_utils.backbones.checkpoints import make_tiny_wav2vec2, tiny_backbone_config, tiny_whisper_config
from ser_utils.data.audio import load_many, normalize
from ser_utils.data.synthetic import make_synthetic_corpus
from ser_utils.evaluation.metrics import metrics_from_predictions
from ser_utils.evaluation.splits import make_splits
from ser_utils.models.classifier import EmotionClassifier
from ser_utils.models.heads import ModelConfig
from ser_utils.results.store import read_metrics
from ser_utils.study.finetuning import finetune_predictions
from ser_utils.training.batches import ClipDataset, LengthGroupedBatches
from ser_utils.training.embeddings import extract_embeddings
from ser_utils.training.frozen_heads import frozen_predictions, layer_probe
from ser_utils.training.loop import TrainConfig, train_fold

FAST = TrainConfig(epochs=3, batch_size=16, lr_backbone=1e-3, lr_head=3e-3, max_seconds=0.5, patience=3)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(make_tiny_wav2vec2(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def meta(synthetic_meta):
    """Half of the synthetic corpus (repetition 1: 30 clips per actor): enough for the tests that embed
    clips or resume training, in half the time. The accuracy check fine-tunes on all clips."""
    return synthetic_meta[synthetic_meta["repetition"] == 1].reset_index(drop=True)


@pytest.fixture(scope="module")
def waves(synthetic_meta):
    loaded, failures = load_many(synthetic_meta["path"])
    assert not failures
    return loaded


def test_length_grouped_batches_cover_every_clip_once_with_little_padding():
    lengths = np.random.default_rng(0).integers(1000, 9000, size=203)
    sampler = LengthGroupedBatches(lengths, 8, shuffle=True, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(203)) and len(batches) == len(sampler)
    padding = sum(len(b) * lengths[b].max() - lengths[b].sum() for b in map(np.array, batches))
    random_batches = np.array_split(np.random.default_rng(2).permutation(203), 26)
    random_padding = sum(len(b) * lengths[b].max() - lengths[b].sum() for b in random_batches)
    assert padding < 0.2 * random_padding
    sampler.epoch = 1
    assert list(sampler) != batches  # a new order each epoch
    eval_order = [i for b in LengthGroupedBatches(lengths, 8, shuffle=False) for i in b]
    assert list(lengths[eval_order]) == sorted(lengths, reverse=True)


@pytest.mark.parametrize("bad", [{"schedule": "cosine"}, {"grad_accum": 0}, {"epochs": 0}, {"batch_size": 2.5},
                                 {"mixed_precision": "fp8"}, {"warmup_ratio": 1.0}, {"max_seconds": 0}])
def test_bad_training_settings_fail_when_built(bad):
    (name,) = bad
    with pytest.raises(ValueError, match=f"^{name}="):
        TrainConfig(**bad)


def test_training_crops_and_evaluation_keeps_whole_clips():
    waves = [np.ones(20000, np.float32) + np.arange(20000) / 1e4]
    train = ClipDataset(waves, [1], max_samples=8000, train=True)
    evaluation = ClipDataset(waves, [1], max_samples=8000, train=False)
    assert len(train[0][0]) == 8000 and len(evaluation[0][0]) == 20000
    assert abs(float(train[0][0].mean())) < 1e-4  # normalized after cropping, as at prediction time


@pytest.mark.slow
def test_short_fine_tune_beats_chance_clearly(synthetic_meta, waves, tiny_dir, tmp_path):
    split = make_splits(synthetic_meta, "actor-kfold")[0]
    predictions, results = finetune_predictions(synthetic_meta, [split], tiny_dir, ModelConfig(), FAST,
                                                tmp_path, "tiny-ft", waves, progress=False)
    (row,) = metrics_from_predictions(predictions)
    assert row["n_test"] == 240 and row["accuracy"] > 0.35  # chance: 0.125
    history = results[0].history
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    fold_dir = tmp_path / "tiny-ft" / "actor-kfold" / "fold1"
    assert (fold_dir / "best" / "model.safetensors").is_file() and not (fold_dir / "last").exists()
    saved = json.loads((fold_dir / "best" / "ser_config.json").read_text())
    assert saved["model"]["labels"][0] == "neutral" and "training" in saved
    # A finished fold is reused, not trained again.
    again, results = finetune_predictions(synthetic_meta, [split], tiny_dir, ModelConfig(), FAST, tmp_path,
                                          "tiny-ft", waves, progress=False)
    assert results == [None] and again.equals(predictions)
    # Other settings (or data, or backbone) make it stale: the fold is trained again.
    _, results = finetune_predictions(synthetic_meta, [split], tiny_dir, ModelConfig(),
                                      replace(FAST, epochs=1), tmp_path, "tiny-ft", waves,
                                      progress=False)
    assert results[0] is not None and [r["epoch"] for r in results[0].history] == [1]


class Interrupted(Exception):
    pass


def test_an_interrupted_run_resumes_where_it_stopped(meta, waves, tiny_dir, tmp_path):
    split = make_splits(meta, "actor-kfold")[1]
    train, val, _ = split.frames(meta.iloc[::3])
    datasets = [ClipDataset([waves[p] for p in part["path"]], part["emotion"].cat.codes.to_numpy(),
                            max_samples=8000, train=flag) for part, flag in ((train, True), (val, False))]

    def make():
        return EmotionClassifier.from_backbone(tiny_dir)

    def crash_after_first_epoch(record):
        if record["epoch"] == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_fold(make, *datasets, FAST, tmp_path, on_epoch_end=crash_after_first_epoch, progress=False)
    assert (tmp_path / "last").is_dir()
    result = train_fold(make, *datasets, FAST, tmp_path, progress=False)
    assert result.resumed_from == 1
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert not (tmp_path / "last").exists()


@pytest.mark.slow
def test_frozen_embeddings_are_cached_and_heads_learn(meta, tiny_dir, tmp_path):
    model = EmotionClassifier.from_backbone(tiny_dir)
    paths = list(meta["path"])
    first = extract_embeddings(model.backbone, paths, tmp_path, backbone_fingerprint(tiny_dir), progress=False)
    second = extract_embeddings(model.backbone, paths, tmp_path, backbone_fingerprint(tiny_dir), progress=False)
    assert (first.computed, first.hits) == (720, 0) and (second.computed, second.hits) == (0, 720)
    assert first.arrays[paths[0]].shape == (3, 3, 32)  # (layers + 1, first/mean/std, hidden size)
    assert np.array_equal(first.arrays[paths[5]], second.arrays[paths[5]])

    splits = make_splits(meta, "actor-kfold")[:2]
    predictions = frozen_predictions(meta, splits, second.arrays, ModelConfig(), "tiny-frozen",
                                     epochs=60)
    assert all(row["accuracy"] > 0.35 for row in metrics_from_predictions(predictions))
    probe = layer_probe(meta, splits, second.arrays)
    assert sorted(probe["layer"].unique()) == [0, 1, 2] and len(probe) == 6


def test_a_changed_model_is_a_new_cache_entry(tmp_path, tiny_dir):
    other = make_tiny_wav2vec2(tmp_path / "other", seed=1)
    assert backbone_fingerprint(tiny_dir) != backbone_fingerprint(str(other))
    assert backbone_fingerprint("facebook/wav2vec2-base") == "facebook/wav2vec2-base"


def test_the_finetune_command_runs_the_system_runner(tmp_path, tiny_dir, monkeypatch, capsys):
    """`python -m ser_utils finetune` in this process, on four generated actors: one fold, one epoch."""
    corpus = make_synthetic_corpus(tmp_path / "corpus", actors=[1, 2, 3, 4], seconds=0.6)
    monkeypatch.setenv("SER_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("SER_REPORTS_DIR", str(tmp_path / "reports"))
    code = main(["finetune", "--profile", "full", "--data", str(corpus), "--backbone", tiny_dir, "--folds", "1",
                 "--epochs", "1", "--batch-size", "16", "--name", "tiny-cli"])
    out = capsys.readouterr().out
    assert code == 0 and "tiny-cli" in out and "1 fold(s)" in out
    metrics = read_metrics(tmp_path / "reports" / "results")
    assert list(metrics["system"]) == ["tiny-cli"] and list(metrics["n_test"]) == [60]  # actor 1's clips
    fold_dir = tmp_path / "work" / "full" / "models" / "wav2vec2" / "tiny-cli" / "actor-kfold" / "fold1"
    assert (fold_dir / "done.json").is_file()  # the default checkpoint folder


@pytest.mark.parametrize("backbone", [tiny_backbone_config, tiny_whisper_config])
def test_training_feeds_the_model_its_clips_as_prediction_does(backbone, waves, tmp_path):
    # Per-clip normalization is the model's choice (wav2vec2: yes; Whisper: never, its log-mel has its
    # own scale): the validation batches of training must be the waves predict_waves would feed it.
    clips = list(waves.values())[:6]
    seen, made = [], []

    def make_model():
        torch.manual_seed(0)
        model = EmotionClassifier.from_config(backbone(), ModelConfig())
        model.register_forward_pre_hook(lambda module, args: None if module.training else seen.append(args))
        made.append(model)
        return model

    sets = [ClipDataset(clips, [0, 1, 2, 3, 4, 5], train=train) for train in (True, False)]
    train_fold(make_model, *sets, replace(FAST, epochs=1, batch_size=6), tmp_path, progress=False)
    batch, lengths = seen[0]
    fed = sorted(float(batch[i, :n].std()) for i, n in enumerate(lengths.tolist()))
    expected = sorted(float((normalize(w) if made[0].config.normalize else w).std()) for w in clips)
    assert made[0].config.normalize == (backbone is tiny_backbone_config)
    assert np.allclose(fed, expected, rtol=1e-3)
