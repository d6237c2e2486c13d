"""Mechanisms with one home: the head shared by fine-tuned and frozen models, longest-first batches, the
model folder and its loader, the metrics, the result store, one-line console messages."""

import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from ser_utils.backbones.checkpoints import tiny_backbone_config
from ser_utils.core.console import error, one_line
from ser_utils.data.audio import longest_first
from ser_utils.evaluation.metrics import metrics_from_confusion, score
from ser_utils.models.classifier import EmotionClassifier
from ser_utils.models.deployable import ModelLoadError
from ser_utils.models.heads import FrozenHead, ModelConfig, layer_statistics
from ser_utils.models.loading import load_deployable
from ser_utils.results.store import read_table, write_table
from ser_utils.serving.prediction_io import audio_files, escape_field
from ser_utils.training.batches import LengthGroupedBatches


def test_the_frozen_head_on_cached_statistics_is_the_classifiers_head_on_frames():
    torch.manual_seed(0)
    config = ModelConfig(pooling="mean", layers="weighted")
    model = EmotionClassifier.from_config(tiny_backbone_config(), config).eval()
    torch.nn.init.normal_(model.layer_weights)
    waves = torch.randn(2, 8000)
    lengths = torch.tensor([8000, 6000])
    stats = layer_statistics(*model.hidden_states(waves, lengths))  # (B, L+1, 3, D)
    shape = stats.shape[1:]
    head = FrozenHead(config, shape[0], shape[-1], torch.zeros(shape), torch.ones(shape)).eval()
    head.load_state_dict({"mean": head.mean, "std": head.std, "layer_weights": model.layer_weights,
                          **{f"head.{k}": v for k, v in model.head.state_dict().items()}})
    # The weighted sum of per-layer means is the mean of the weighted sum: the same logits either way.
    with torch.no_grad():
        assert torch.allclose(head(stats), model(waves, lengths), atol=1e-5)
    assert set(head.state_dict()) == {"mean", "std", "layer_weights", "head.0.weight", "head.0.bias",
                                      "head.3.weight", "head.3.bias"}  # the keys saved folders hold


def test_longest_first_batches_are_the_evaluation_order_of_the_training_sampler():
    lengths = [3, 9, 9, 1, 5]
    assert longest_first(lengths, 2) == [[1, 2], [4, 0], [3]]
    assert list(LengthGroupedBatches(lengths, 2, shuffle=False)) == longest_first(lengths, 2)
    shuffled = list(LengthGroupedBatches(lengths, 2, shuffle=True, seed=1))
    assert sorted(i for batch in shuffled for i in batch) == list(range(5))


def test_a_folder_of_an_unknown_format_names_itself_and_what_to_do(tmp_path):
    torch.manual_seed(0)
    folder = EmotionClassifier.from_config(tiny_backbone_config()).save_pretrained(tmp_path / "model")
    assert isinstance(load_deployable(folder, "cpu"), EmotionClassifier)
    config = json.loads((folder / "ser_config.json").read_text())
    (folder / "ser_config.json").write_text(json.dumps({**config, "format": "someone-else/3"}))
    with pytest.raises(ModelLoadError, match=r"model: ser_config.json has format 'someone-else/3'.*export"):
        load_deployable(folder)
    shutil.rmtree(folder)
    folder.mkdir()
    with pytest.raises(ModelLoadError, match="not a model directory"):
        load_deployable(folder)


def test_score_and_the_vectorised_metrics_are_one_definition():
    labels = ("a", "b", "c")
    truth, guess = ["a", "a", "b", "b", "b", "c"], ["a", "b", "b", "b", "c", "a"]
    scores = score(truth, guess, labels)
    vectorised = metrics_from_confusion(scores.confusion[None])
    assert scores.as_dict() == {**{k: float(v[0]) for k, v in vectorised.items()}, "n_test": 6}
    with pytest.raises(ValueError, match=r"predicted labels \['z'\] are not among"):
        score(["a"], ["z"], labels)


def test_result_tables_go_through_one_writer_keyed_by_the_layout(tmp_path):
    assert read_table(tmp_path, "corpus") is None
    path = write_table(pd.DataFrame({"stem": ["03-01"], "path": ["/home/me/x.wav"], "actor": [1]}), tmp_path,
                       "corpus")
    assert path == tmp_path / "corpus.csv"
    back = read_table(tmp_path, "corpus")
    assert list(back.columns) == ["stem", "actor"] and back["stem"].tolist() == ["03-01"]  # no local paths
    with pytest.raises(KeyError, match="no result table 'nonsense'"):
        write_table(back, tmp_path, "nonsense")


def test_messages_naming_odd_files_stay_one_line(tmp_path, capsys):
    error("cannot read a\nb.wav")
    assert capsys.readouterr().err == "error: cannot read a\\nb.wav\n"
    assert escape_field("a\tb\\c\n") == one_line("a\tb\\c\n", field=True) == "a\\tb\\\\c\\n"
    odd = tmp_path / "two\nlines.wav"
    sf.write(odd, np.zeros(1600, dtype=np.float32), 16000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files, _ = audio_files([odd, tmp_path])
    assert files == [odd]
    assert len(caught) == 1 and "\n" not in str(caught[0].message) and "given 2 times" in str(caught[0].message)
