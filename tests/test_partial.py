"""Partial fine-tuning: the top layers from cached lower-layer states give what the whole encoder gives,
and only the top layers, the layer weights and the head train; through the real cache, loop and command."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from ser_utils.__main__ import main
from ser_utils.backbones import BackboneError, load_backbone
from ser_utils.backbones.checkpoints import make_tiny_checkpoint, make_tiny_wav2vec2, make_tiny_whisper
from ser_utils.data.audio import collate, load_many
from ser_utils.data.synthetic import make_synthetic_corpus
from ser_utils.models.classifier import EmotionClassifier
from ser_utils.models.heads import FrozenHead, ModelConfig, layer_statistics
from ser_utils.models.loading import load_deployable
from ser_utils.results.store import read_metrics
from ser_utils.training.loop import TrainConfig, parameter_groups
from ser_utils.training.partial import FromCachedStates, cache_layer_states


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny random checkpoints laid out as the hub's (3 layers, so 1 and 2 top layers leave some below)."""
    root = tmp_path_factory.mktemp("checkpoints")
    whisper = make_tiny_whisper(root / "whisper", encoder_layers=3)
    wav2vec2 = make_tiny_wav2vec2(root / "wav2vec2")
    return {"whisper": str(whisper), "wav2vec2": str(wav2vec2)}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Six generated clips of different lengths (0.4 to 1.2 s) on disk."""
    corpus = make_synthetic_corpus(tmp_path_factory.mktemp("corpus"), actors=[1], seconds=1.2)
    paths = sorted(str(p) for p in corpus.rglob("*.wav"))[:6]
    waves, failures = load_many(paths)
    assert not failures
    for i, path in enumerate(paths):  # different lengths: the batches are padded
        waves[path] = waves[path][: int(16_000 * (0.4 + 0.16 * i))]
    return paths, waves


def classifier(checkpoint: str, seed: int = 0, **model) -> EmotionClassifier:
    torch.manual_seed(seed)
    model = EmotionClassifier.from_backbone(checkpoint, ModelConfig(**model))
    if model.layer_weights is not None:
        with torch.no_grad():  # unequal weights: every layer's share counts
            model.layer_weights.normal_()
    return model.eval()


@pytest.mark.parametrize("family", ["whisper", "wav2vec2"])
@pytest.mark.parametrize("model", [{"pooling": "mean", "layers": "weighted"},
                                   {"pooling": "first", "layers": "weighted"},
                                   {"pooling": "mean+std", "layers": "last"}])
@pytest.mark.parametrize("k", [1, 2])
def test_the_top_layers_from_their_input_give_the_whole_encoders_logits(checkpoints, clips, family, model, k):
    net = classifier(checkpoints[family], train_layers=k, **model)
    paths, waves = clips
    batch, lengths = collate([waves[p] for p in paths])  # wav2vec2: the model's own normalization
    if net.config.normalize:
        from ser_utils.data.audio import normalize

        batch, lengths = collate([normalize(waves[p]) for p in paths])
    with torch.no_grad():
        expected = net(batch, lengths)
        states, mask = net.backbone(batch, lengths)
        start = net.first_trained_layer
        below = layer_statistics(states[:, :start], mask)
        got = net.forward_cached(states[:, start] * mask[..., None], mask.sum(1), below)
    assert start == net.backbone.num_layers - k
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["whisper", "wav2vec2"])
@pytest.mark.parametrize("pooling", ["mean", "first"])
def test_a_warm_started_classifier_computes_its_frozen_heads_logits(checkpoints, clips, family, pooling):
    """Linear probing, then fine-tuning: before any step the classifier is the frozen head on the encoder,
    through the whole encoder and from cached states alike."""
    net = classifier(checkpoints[family], train_layers=1, standardize=True, pooling=pooling)
    paths, waves = clips
    batch, lengths = collate([waves[p] for p in paths])
    with torch.no_grad():
        states, mask = net.backbone(batch, lengths)
        stats = layer_statistics(states, mask)
    torch.manual_seed(1)
    head = FrozenHead(net.config, stats.shape[1], stats.shape[-1], stats.mean(0), stats.std(0) + 0.1).eval()
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.normal_()
        expected = head(stats)
        net.warm_start(head)
        start = net.first_trained_layer
        through_encoder = net(batch, lengths)
        cached = net.forward_cached(states[:, start] * mask[..., None], mask.sum(1), stats)
    torch.testing.assert_close(through_encoder, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cached, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="warm_start"):
        classifier(checkpoints[family], train_layers=1).warm_start(head)


@pytest.mark.parametrize("family", ["whisper", "wav2vec2"])
def test_the_cache_on_disk_gives_the_same_predictions_and_is_reused(checkpoints, clips, tmp_path, family):
    net = classifier(checkpoints[family], train_layers=1)
    paths, waves = clips
    files = []
    for path in paths:  # the cache reads the files: write the cut clips
        import soundfile as sf

        files.append(str(tmp_path / f"{len(files)}.wav"))
        sf.write(files[-1], waves[path], 16_000, subtype="FLOAT")
    states = cache_layer_states(net.backbone, files, tmp_path / "cache", "tiny", 1, dtype=torch.float32,
                                progress=False)
    assert (states.computed, states.hits, states.start) == (6, 0, net.backbone.num_layers - 1)
    assert all(x.dtype == np.float16 and x.shape[1] == net.backbone.hidden_size for x in states.inputs.values())
    dataset = states.dataset(files, np.arange(6))
    (x, frames, lower), labels, seconds = dataset.collate([dataset[i] for i in range(6)])
    assert labels.tolist() == list(range(6))
    assert seconds == pytest.approx(sum(len(waves[p]) for p in paths) / 16_000, rel=0.05)
    with torch.no_grad():
        cached = net.forward_cached(x, frames, lower)
    through_encoder = net.predict_proba([waves[p] for p in paths], precision=None)
    assert (cached.argmax(1).numpy() == through_encoder.argmax(1)).all()
    np.testing.assert_allclose(torch.softmax(cached, 1).numpy(), through_encoder, atol=2e-3)  # float16 storage
    again = cache_layer_states(net.backbone, files, tmp_path / "cache", "tiny", 1, dtype=torch.float32,
                               progress=False)
    assert (again.computed, again.hits) == (0, 6)
    other = cache_layer_states(net.backbone, files, tmp_path / "cache", "tiny", 2, dtype=torch.float32,
                               progress=False)
    assert other.computed == 6 and next(iter(other.inputs.values())).shape == next(iter(states.inputs.values())).shape
    assert next(iter(other.lower.values())).shape[:2] == (net.backbone.num_layers + 1, 3)


def trained_parameters(before: dict, after: dict) -> set[str]:
    return {name for name in before if not torch.equal(before[name], after[name])}


@pytest.mark.parametrize("family", ["whisper", "wav2vec2"])
@pytest.mark.parametrize("cached", [True, False])
def test_one_step_changes_only_the_top_layers_the_layer_weights_and_the_head(checkpoints, clips, family, cached):
    k = 1
    net = classifier(checkpoints[family], train_layers=k)
    paths, waves = clips
    batch, lengths = collate([waves[p] for p in paths])
    with torch.no_grad():
        states, mask = net.backbone(batch, lengths)
    start = net.first_trained_layer
    model = FromCachedStates(net) if cached else net
    inputs = ((states[:, start] * mask[..., None], mask.sum(1), layer_statistics(states[:, :start], mask)) if cached
              else (batch, lengths))
    before = {name: value.clone() for name, value in net.state_dict().items()}
    optimizer = torch.optim.AdamW(parameter_groups(model, TrainConfig(lr_backbone=1e-2, lr_head=1e-2)))
    model.train()
    torch.nn.functional.cross_entropy(model(*inputs), torch.arange(6) % 8).backward()
    optimizer.step()
    changed = trained_parameters(before, net.state_dict())
    layers = "backbone.layers." if family == "whisper" else "backbone.model.encoder.layers."
    top = f"{layers}{net.backbone.num_layers - 1}."
    allowed = {n for n in before if n.startswith((top, "head.")) or n == "layer_weights"
               or (family == "whisper" and n.startswith("backbone.layer_norm."))}
    assert changed <= allowed and changed  # nothing below the top layer moved
    assert {n for n in allowed if n.startswith(top) and n.endswith("weight")} <= changed
    assert "layer_weights" in changed and any(n.startswith("head.") for n in changed)
    assert not any(m.training for m in net.backbone.modules() if m not in set(net.backbone.top_modules(k))
                   and not any(m is c for t in net.backbone.top_modules(k) for c in t.modules()))


def test_partial_settings_are_checked_where_they_are_made(checkpoints):
    with pytest.raises(ValueError, match="train_layers=0"):
        ModelConfig(train_layers=0)
    with pytest.raises(ValueError, match="freeze='backbone'"):
        ModelConfig(train_layers=1, freeze="backbone")
    with pytest.raises(ValueError, match="standardize"):
        ModelConfig(standardize=True, pooling="mean+std")
    assert "mean+std" in ModelConfig(train_layers=1, pooling="mean+std").from_cached_states
    with pytest.raises(ValueError, match="train_layers=4: the whisper backbone has 3 layers"):
        EmotionClassifier.from_backbone(checkpoints["whisper"], ModelConfig(train_layers=4))
    pad30, _ = load_backbone(checkpoints["whisper"], options={"input": "pad30"})
    with pytest.raises(ValueError, match="pad30"):
        cache_layer_states(pad30, [], "unused", "tiny", 1)


def test_wavlm_says_it_cannot_run_its_top_layers_alone(tmp_path):
    encoder, _ = load_backbone(str(make_tiny_checkpoint(tmp_path / "wavlm", "wavlm")))
    with pytest.raises(BackboneError, match="WavLM cannot run its top layers"):
        encoder.forward_from(torch.zeros(1, 5, encoder.hidden_size), torch.ones(1, 5, dtype=torch.bool), 1)


def test_the_finetune_command_trains_the_top_layer_from_cached_states(tmp_path, checkpoints, monkeypatch, capsys):
    """`finetune --train-layers 1` on four generated actors: the row says what trained, the fold's model
    folder predicts through the whole encoder, and a rerun reuses the fold."""
    corpus = make_synthetic_corpus(tmp_path / "corpus", actors=[1, 2, 3, 4], seconds=0.6)
    monkeypatch.setenv("SER_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("SER_REPORTS_DIR", str(tmp_path / "reports"))
    args = ["finetune", "--profile", "full", "--data", str(corpus), "--backbone", checkpoints["whisper"],
            "--folds", "1", "--epochs", "2", "--batch-size", "16", "--train-layers", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "whisper-project-ft-top1" in out
    metrics = read_metrics(tmp_path / "reports" / "results")
    assert list(metrics["system"]) == ["whisper-project-ft-top1"] and list(metrics["n_test"]) == [60]
    fold = tmp_path / "work" / "full" / "models" / "whisper" / "whisper-project-ft-top1" / "actor-kfold" / "fold1"
    log = [json.loads(line) for line in (fold / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert list((tmp_path / "work" / "full" / "cache" / "frames").rglob("*.npy"))  # states were cached
    model = load_deployable(fold / "best")
    assert model.model_config.train_layers == 1 and "top 1 trained" in model.describe()
    waves, _ = load_many(sorted(str(p) for p in corpus.rglob("*.wav"))[:3])
    assert model.predict_proba(list(waves.values())).shape == (3, 8)
    # The fold's test clips were scored from the cached states; the folder scores them through the whole encoder.
    tested = pd.read_csv(fold / "predictions.csv", dtype={"stem": str})
    paths = {p.stem: str(p) for p in corpus.rglob("*.wav")}
    test_waves, _ = load_many([paths[stem] for stem in tested["stem"]])
    through_encoder = np.asarray(model.labels)[model.predict_proba(list(test_waves.values())).argmax(1)]
    assert (through_encoder == tested["predicted"].to_numpy()).mean() >= 0.95
    mtime = (fold / "done.json").stat().st_mtime
    assert main(args) == 0 and (fold / "done.json").stat().st_mtime == mtime  # reused, not retrained
    assert main([*args[:-1], "9"]) == 2
    assert "--train-layers 9: the whisper backbone has 3 layers" in capsys.readouterr().err


def test_the_frozen_modes_encoder_pass_also_caches_the_partial_input(checkpoints, clips, tmp_path):
    """One encoder pass per clip for both modes: embeddings extracted with ``frames_of`` leave nothing for
    partial fine-tuning to compute, and its statistics are the frozen mode's embeddings."""
    import soundfile as sf

    from ser_utils.training.embeddings import extract_embeddings

    net = classifier(checkpoints["whisper"], train_layers=1)
    paths, waves = clips
    files = [str(tmp_path / f"{i}.wav") for i in range(len(paths))]
    for file, path in zip(files, paths, strict=True):
        sf.write(file, waves[path], 16_000, subtype="FLOAT")
    start = net.first_trained_layer
    frozen = extract_embeddings(net.backbone, files, tmp_path / "cache", "tiny", dtype=torch.float32,
                                frames_of=(start,), progress=False)
    assert frozen.computed == len(files) and set(frozen.frames) == {start}
    states = cache_layer_states(net.backbone, files, tmp_path / "cache", "tiny", 1, dtype=torch.float32,
                                progress=False)
    assert (states.computed, states.hits) == (0, len(files))
    for file in files:
        np.testing.assert_array_equal(states.lower[file], frozen.arrays[file])
        np.testing.assert_array_equal(states.inputs[file], frozen.frames[start][file])
    plain = extract_embeddings(net.backbone, files, tmp_path / "cache", "tiny", dtype=torch.float32, progress=False)
    assert (plain.computed, plain.hits) == (0, len(files))  # the same embeddings cache


def test_the_study_chooses_the_setting_on_validation_actors_and_trains_it_on_every_fold(tmp_path, checkpoints,
                                                                                       monkeypatch):
    """Candidates train on the first fold only; the best validation UAR is chosen (its fold adopted, not
    retrained), the other folds train the chosen setting, and a rerun reuses every fold."""
    from ser_utils.core.config import EncoderRun, get_profile
    from ser_utils.data.corpus import discover
    from ser_utils.results.store import read_table
    from ser_utils.study.partial import frame_states, run_partial_finetune, selection_caption
    from ser_utils.study.systems import PROJECT, StudyBackbone
    from ser_utils.training.loop import FoldFolder

    corpus = make_synthetic_corpus(tmp_path / "corpus", actors=[1, 2, 3, 4], seconds=0.6)
    monkeypatch.setenv("SER_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("SER_REPORTS_DIR", str(tmp_path / "reports"))
    profile = get_profile("full")
    meta = discover(corpus)
    backbone = StudyBackbone.check(checkpoints["whisper"], {"whisper": {"input": "clip"}})
    run = EncoderRun(folds=(1, 2), partial_layers=(1,), partial_lrs=(1e-5, 1e-3), partial_epochs=2,
                     partial_batch_size=16)
    assert frame_states(backbone, PROJECT, run, ("frozen", "finetune")) == (backbone.report.layers - 1,)
    assert frame_states(backbone, PROJECT, run, ("frozen",)) == ()
    metrics, curves, selection = run_partial_finetune(profile, meta, backbone, PROJECT, run, ["actor-kfold"],
                                                      out_root=tmp_path / "folds")
    assert list(selection["lr_backbone"]) == [1e-5, 1e-3] and set(selection["fold"]) == {1}
    chosen = selection[selection["chosen"]]
    assert len(chosen) == 1 and chosen["val_uar"].iloc[0] == selection["val_uar"].max()
    system = "whisper-project-ft-top1"
    assert list(metrics["system"].unique()) == [system] and sorted(metrics["fold"]) == [1, 2]
    assert set(curves) == {(system, "actor-kfold", 1), (system, "actor-kfold", 2)}
    adopted = FoldFolder.of(tmp_path / "folds" / "selection", chosen["candidate"].iloc[0], "actor-kfold", 1)
    folds = [FoldFolder.of(tmp_path / "folds", system, "actor-kfold", fold) for fold in (1, 2)]
    assert folds[0].done.read_text() == adopted.done.read_text()  # the chosen candidate's fold, not retrained
    assert json.loads(folds[1].done.read_text())["training"]["lr_backbone"] == chosen["lr_backbone"].iloc[0]
    assert read_table(profile.results_dir, "finetune_selection")["chosen"].sum() == 1
    assert "chosen on the validation actors of actor-kfold fold 1" in selection_caption("whisper", selection)
    assert "one fixed partial setting (nothing chosen" in selection_caption("whisper", selection[:1])
    stamps = [f.done.stat().st_mtime for f in folds]
    run_partial_finetune(profile, meta, backbone, PROJECT, run, ["actor-kfold"], out_root=tmp_path / "folds")
    assert [f.done.stat().st_mtime for f in folds] == stamps  # reused


def test_partial_fine_tuning_runs_under_the_random_split_only_with_seeds_for_it(checkpoints):
    from ser_utils.core.config import EncoderRun
    from ser_utils.study.partial import partial_protocols, partial_reason
    from ser_utils.study.systems import PROJECT, StudyBackbone

    backbone = StudyBackbone.check(checkpoints["whisper"], {"whisper": {"input": "clip"}})
    both = ["actor-kfold", "random-80-20"]
    assert partial_protocols(both, EncoderRun()) == ["actor-kfold"]  # the default since issue 34
    assert partial_protocols(both, EncoderRun(partial_random_repeats=1)) == both
    assert partial_reason(backbone, PROJECT, EncoderRun(), ("finetune",), both) is None
    assert "partial_random_repeats=0" in partial_reason(backbone, PROJECT, EncoderRun(), ("finetune",),
                                                        ["random-80-20"])
    with pytest.raises(ValueError, match="partial_random_repeats=-1"):
        EncoderRun(partial_random_repeats=-1)
