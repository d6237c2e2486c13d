"""Fine-tuned systems: one model per split, trained (or reused, or resumed) in its fold folder, its test
clips predicted with the best checkpoint, and the checkpoint to use on new audio (notebook 04 and the
``finetune`` command; ``accelerate launch`` for several GPUs).

A fold is trained from its split's clips, the backbone and the settings; its folder
(:class:`~ser_utils.training.loop.FoldFolder`) records their fingerprint, so a finished fold is reused only when
they are unchanged, an interrupted one resumes, and ``FORCE=1`` retrains folds made before the run.
Under ``accelerate launch`` every process trains; only the main one writes files, and the others wait
for it wherever they would read what it writes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..backbones import backbone_fingerprint
from ..core.atomic import atomic_to_csv, atomic_write_text
from ..core.cache import file_digest, params_digest
from ..core.config import Profile, recompute_before
from ..core.device import default_device
from ..core.fingerprint import code_digest
from ..core.names import guess_family, model_folder
from ..data.audio import SAMPLE_RATE
from ..evaluation.metrics import prediction_table, score
from ..evaluation.splits import PROTOCOLS, Split
from ..models.classifier import EmotionClassifier
from ..models.heads import ModelConfig
from ..results.store import write_systems
from ..training.loop import FoldFolder, FoldResult, TrainConfig
from .systems import Recipe, StudyBackbone, is_main_process, protocol_splits, study_encoder


def finetune_device_reason(allow_cpu: bool) -> str | None:
    """Why fine-tuning is skipped here (``None``: it runs)."""
    if default_device() == "cuda" or allow_cpu:
        return None
    return ("fine-tuning needs a GPU (on this CPU one fold would take many hours); "
            "run the notebook on a CUDA machine or set finetune_on_cpu=True")


def default_out_root(profile: Profile, family: str = "wav2vec2") -> Path:
    """Where fine-tuning folds of a backbone family live: ``models_dir/<family>``."""
    return profile.models_dir / family


def run_finetune(profile: Profile, meta: pd.DataFrame, backbone: str | StudyBackbone, recipes: Sequence[Recipe],
                 protocols: Sequence[str] = PROTOCOLS, *, folds: Sequence[int] | None = None,
                 random_repeats: int = 5, out_root: Path | None = None,
                 names: Sequence[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Fine-tune mode: every recipe under every protocol; finished folds are reused from disk.

    Checkpoints go under ``out_root`` (default ``models_dir/<family>``); ``names`` replaces the
    systems' result names (default: the backbone's, e.g. ``w2v2-project-ft``), one per recipe. A recipe
    with ``train_layers`` trains from cached lower-layer states where it can (whole clips). Returns
    the fold metrics of every system and the epoch logs, keyed by (system, protocol, fold).
    """
    from ..data.audio import load_many

    backbone = backbone if isinstance(backbone, StudyBackbone) else StudyBackbone(backbone, guess_family(backbone))
    out_root = out_root or default_out_root(profile, backbone.family)
    names = list(names) if names else [backbone.system(r, "finetune") for r in recipes]
    if len(names) != len(recipes):
        raise ValueError(f"names: {len(names)} given for {len(recipes)} recipe(s)")
    waves, _ = load_many(meta["path"])
    predictions, histories = {name: [] for name in names}, {}
    for protocol in protocols:
        splits = protocol_splits(meta, protocol, profile, folds=folds, random_repeats=random_repeats)
        for recipe, name in zip(recipes, names, strict=True):
            predictions[name].append(finetune_predictions(meta, splits, backbone.checkpoint, recipe.model,
                                                          recipe.training, out_root, name, waves,
                                                          options=backbone.options, cache_root=profile.cache_dir)[0])
            for split in splits:
                histories[(name, protocol, split.fold)] = FoldFolder.of(out_root, name, protocol, split.fold).history()
    return (write_systems(predictions, profile.results_dir) if is_main_process() else pd.DataFrame()), histories


def export_model(profile: Profile, system: str = "w2v2-project-ft", protocol: str = "actor-kfold", fold: int = 1,
                 out_root: Path | None = None, backbone: StudyBackbone | None = None) -> Path:
    """Copy one fold's best fine-tuned checkpoint to ``models_dir/<family>-ser`` (``wav2vec2-ser``) as the
    model to use on new audio.

    The fold's model never saw its test actors, so its test scores (written beside it in
    ``evaluation.json``) are an honest estimate for unseen speakers.
    """
    from ..results.store import read_predictions

    backbone = backbone or StudyBackbone(profile.backbone, guess_family(profile.backbone))
    source = FoldFolder.of(out_root or default_out_root(profile, backbone.family), system, protocol, fold).best
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no trained checkpoint to export")
    target = profile.models_dir / model_folder(backbone.family, "finetune")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    predictions = read_predictions(profile.results_dir, [system])
    tested = predictions[(predictions["protocol"] == protocol) & (predictions["fold"] == fold)]
    scores = score(tested["emotion"], tested["predicted"])
    atomic_write_text(target / "evaluation.json", json.dumps({
        "system": system, "protocol": protocol, "fold": fold, "profile": profile.name,
        "data": profile.describe_data(), "backbone": backbone.describe(),
        "test_actors": sorted(int(a) for a in tested["actor"].unique()), **scores.as_dict()}, indent=1))
    return target


def finetune_predictions(meta: pd.DataFrame, splits: Sequence[Split], backbone: str, model_config: ModelConfig,
                         config: TrainConfig, out_root: str | Path, system: str, waves: dict[str, np.ndarray], *,
                         on_epoch_end: Callable[[dict], None] | None = None, options: dict | None = None,
                         progress: bool = True, cache_root: str | Path | None = None) -> tuple[pd.DataFrame, list]:
    """Fine-tune one model per split (a fresh ``backbone`` each time) and predict its test clips with the
    best checkpoint.

    ``waves`` maps each clip's path to its 16 kHz waveform (clips missing from it - files that failed
    to load - are left out). Each fold lives in ``FoldFolder.of(out_root, system, protocol, fold)``.
    Partial fine-tuning (``model_config.train_layers``) trains from cached lower-layer states when
    ``cache_root`` is given and the configuration allows it (:mod:`ser_utils.training.partial`), else
    through the whole encoder. Test clips are scored the way the fold trained: from the same cached states
    (the saved model's own logits with its fixed lower layers' output read back, up to float16 storage; the
    whole encoder's pass would recompute what the frozen mode's pass cached, at most of the partial run's
    test-time cost), else through the whole encoder, as ``predict`` does.
    Returns the predictions table (``system, protocol, fold, stem, actor, emotion, predicted``) and each
    fold's :class:`~ser_utils.training.loop.FoldResult` (``None`` for folds reused from disk).
    """
    from ..training.loop import processes_state

    processes = processes_state()
    meta = meta[meta["path"].isin(waves.keys())]
    use_cache = cache_root is not None and cached_path_reason(model_config, config) is None
    if model_config.standardize and not use_cache:
        raise ValueError("standardize starts from a frozen head on cached states: partial fine-tuning "
                         f"(train_layers) from cached states only ({cached_path_reason(model_config, config)})")
    states, frames, results = None, [], []
    for split in splits:
        folder = FoldFolder.of(out_root, system, split.protocol, split.fold)
        fingerprint = fold_fingerprint(split, meta, backbone, model_config, config, options, cached=use_cache)
        _discard_outdated(folder, fingerprint, processes)
        result = None
        if not folder.finished(fingerprint):
            def make_model():
                return EmotionClassifier.from_backbone(backbone, model_config, options=options)

            if use_cache:
                if states is None:  # once, for every split; the main process first, the others read its cache
                    with processes.main_process_first():
                        states = layer_states(meta, backbone, model_config, options, cache_root, progress)
                result = _train_split_cached(folder, split, meta, states, model_config, make_model, config,
                                             on_epoch_end, progress)
            else:
                result = _train_split(folder, split, meta, waves, model_config.labels, make_model, config,
                                      on_epoch_end, progress)
            if processes.is_main_process:
                _predict_test(folder, result, split, meta, waves, system, config, fingerprint, processes.device,
                              states if use_cache else None)
            processes.wait_for_everyone()
        # Under the system's name: a fold adopted from a selection run was written under its candidate's.
        frames.append(pd.read_csv(folder.predictions, dtype={"stem": str}).assign(system=system))
        results.append(result)
    return pd.concat(frames, ignore_index=True), results


def cached_path_reason(model_config: ModelConfig, config: TrainConfig) -> str | None:
    """Why a recipe cannot train from cached lower-layer states (``None``: it can)."""
    if model_config.from_cached_states:
        return model_config.from_cached_states
    if config.max_seconds is not None:
        return ("training from cached states uses whole clips (a crop would change every fixed layer's states): "
                "set max_seconds=None")
    return None


def layer_states(meta: pd.DataFrame, backbone: str, model_config: ModelConfig, options: dict | None,
                 cache_root: str | Path, progress: bool = True):
    """The cached lower-layer states of every clip of ``meta``
    (:func:`~ser_utils.training.partial.cache_layer_states`)."""
    from ..training.partial import cache_layer_states

    states = cache_layer_states(study_encoder(backbone, options), meta["path"], cache_root,
                                backbone_fingerprint(backbone), model_config.train_layers, progress=progress)
    if states.failures:
        first = next(iter(states.failures.values()))
        raise ValueError(f"{len(states.failures)} clip(s) gave no cached states, e.g. {first}")
    return states


def _discard_outdated(folder: FoldFolder, fingerprint: str, processes) -> None:
    """Start a fold afresh when it was made before a forced run (``FORCE=1`` without ``KEEP_FOLDS=1``) or
    from other data, model or settings; then record what it is trained from. Every process has looked
    before the main one removes anything."""
    forced = recompute_before(folds=True)
    stamp = folder.fingerprint
    processes.wait_for_everyone()
    if processes.is_main_process:
        outdated = forced is not None and stamp.is_file() and stamp.stat().st_mtime < forced
        changed = folder.root.is_dir() and (not stamp.is_file() or stamp.read_text() != fingerprint)
        if outdated or changed:
            shutil.rmtree(folder.root)
        if not folder.finished(fingerprint):
            folder.root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(stamp, fingerprint)
    processes.wait_for_everyone()


def _train_split(folder: FoldFolder, split: Split, meta: pd.DataFrame, waves: dict[str, np.ndarray],
                 labels: Sequence[str], make_model: Callable[[], EmotionClassifier], config: TrainConfig,
                 on_epoch_end: Callable[[dict], None] | None, progress: bool) -> FoldResult:
    """Train the split's model in its folder (random crops for training, whole clips for validation)."""
    from ..training.batches import ClipDataset
    from ..training.loop import train_fold

    train, val, _ = split.frames(meta)
    label_index = {name: i for i, name in enumerate(labels)}
    crop = int(config.max_seconds * SAMPLE_RATE) if config.max_seconds else None
    datasets = [ClipDataset([waves[p] for p in part["path"]], part["emotion"].astype(str).map(label_index).to_numpy(),
                            max_samples=crop, train=is_train, seed=config.seed)
                for part, is_train in ((train, True), (val, False))]
    return train_fold(make_model, *datasets, config, folder.root, on_epoch_end=on_epoch_end, progress=progress)


def _train_split_cached(folder: FoldFolder, split: Split, meta: pd.DataFrame, cached, model_config: ModelConfig,
                        make_model: Callable[[], EmotionClassifier], config: TrainConfig,
                        on_epoch_end: Callable[[dict], None] | None, progress: bool) -> FoldResult:
    """Train the split's top layers from cached states (whole clips for training and validation)."""
    train, val, _ = split.frames(meta)
    label_index = {name: i for i, name in enumerate(model_config.labels)}
    parts = [(list(part["path"]), part["emotion"].astype(str).map(label_index).to_numpy()) for part in (train, val)]
    return train_from_states(cached, parts, model_config, make_model, config, folder.root, on_epoch_end=on_epoch_end,
                             progress=progress)


def train_from_states(cached, parts, model_config: ModelConfig, make_model: Callable[[], EmotionClassifier],
                      config: TrainConfig, folder: str | Path, *, on_epoch_end: Callable[[dict], None] | None = None,
                      progress: bool = True) -> FoldResult:
    """Train a classifier's top layers from cached states in ``folder``: ``parts`` is ``[(train paths, train
    classes), (validation paths, validation classes)]``; the classifier (``make_model()``) starts from
    :func:`warm_start_head` on the same parts. The study's splits and ``train --train-layers`` both train here."""
    from ..training.loop import train_fold
    from ..training.partial import FromCachedStates

    datasets = [cached.dataset(paths, y) for paths, y in parts]
    start = warm_start_head(cached, parts, model_config, config.seed)
    return train_fold(lambda: FromCachedStates(start(make_model())), *datasets, config, folder,
                      on_epoch_end=on_epoch_end, progress=progress)


def warm_start_head(cached, parts, config: ModelConfig, seed: int):
    """What a standardising classifier starts from (``ModelConfig.standardize``): a frozen head trained on the
    split's cached statistics of every layer, early-stopped on its validation clips, as the frozen mode
    trains its heads (linear probing, then fine-tuning). Returns ``classifier -> classifier``."""
    if not config.standardize:
        return lambda model: model
    from ..training.embeddings import stack
    from ..training.frozen_heads import train_frozen_head

    (train, y_train), (val, y_val) = parts
    head = train_frozen_head(config, stack(cached.lower, train), y_train, stack(cached.lower, val), y_val, seed=seed)
    return lambda model: model.warm_start(head)


def _predict_test(folder: FoldFolder, result: FoldResult, split: Split, meta: pd.DataFrame,
                  waves: dict[str, np.ndarray], system: str, config: TrainConfig, fingerprint: str, device,
                  states=None) -> None:
    """Predict the split's test clips with the best checkpoint (from cached ``states`` when given, else
    through the whole encoder); mark the fold finished."""
    best = EmotionClassifier.from_pretrained(result.best_dir).to(device)
    test = split.frames(meta)[2]
    if states is not None:
        predicted = predict_cached(best, states, list(test["path"]), batch_size=config.eval_batch_size)
    else:
        predicted = best.predict_proba([waves[p] for p in test["path"]], batch_size=config.eval_batch_size).argmax(1)
    table = prediction_table(system, split.protocol, split.fold, test, np.asarray(best.config.labels)[predicted])
    atomic_to_csv(table, folder.predictions, index=False)
    atomic_write_text(folder.done, json.dumps({"best_epoch": result.best_epoch, "best_val_uar": result.best_val_uar,
                                               "training": config.to_dict(), "fingerprint": fingerprint}))


def predict_cached(model: EmotionClassifier, states, paths: Sequence[str], *, batch_size: int = 16) -> np.ndarray:
    """Class indices ``(len(paths),)`` of a partially fine-tuned ``model`` on clips of cached ``states``
    (:class:`~ser_utils.training.partial.CachedStates`: only its top layers and head run), in order, at the
    device's autocast precision as its validation ran."""
    from torch.utils.data import DataLoader

    from ..core.device import autocast, autocast_dtype
    from ..training.loop import loader_logits
    from ..training.partial import FromCachedStates

    device = next(model.parameters()).device
    dataset = states.dataset(list(paths), np.zeros(len(paths), dtype=int))
    with autocast(device, autocast_dtype(device)):
        logits, _ = loader_logits(FromCachedStates(model), DataLoader(dataset, batch_size=batch_size,
                                                                      collate_fn=dataset.collate))
    return logits.argmax(-1).numpy()


def fold_fingerprint(split: Split, meta: pd.DataFrame, backbone: str, model_config: ModelConfig,
                     config: TrainConfig, options: dict | None = None, *, cached: bool = False) -> str:
    """What a trained fold depends on: the clips of its split (names and content), the backbone and its
    options, the model and training settings, whether it trained from cached states, and the code of
    audio loading, the backbone and model, and training. A finished fold is reused only when this is
    unchanged."""
    from .. import backbones
    from ..data import audio
    from ..models import classifier, heads
    from ..training import batches, loop, partial

    clips = meta[meta["stem"].isin(set(split.train) | set(split.val) | set(split.test))]
    content = {stem: file_digest(path) for stem, path in zip(clips["stem"], clips["path"], strict=True)}
    return params_digest({"split": split.to_dict(), "content": content, "backbone": backbone_fingerprint(backbone),
                          "options": options or {}, "model": model_config.to_dict(), "training": config.to_dict(),
                          "cached": cached, "code": code_digest(audio, backbones, heads, classifier, batches, loop,
                                                                partial)})
