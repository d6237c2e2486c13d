"""Fine-tuning loop for :class:`~ser_utils.model.EmotionClassifier` (Hugging Face ``accelerate``).

One loop for CPU, one GPU, or several GPUs / machines (``accelerate launch``): AdamW with separate
learning rates for backbone and head, warm-up then decay, gradient clipping, bf16 mixed precision on
CUDA, gradient accumulation, random crops in training and full clips in evaluation, length-grouped
batches, early stopping on validation UAR keeping the best checkpoint, a JSON log line per epoch,
and resume after an interruption.

A fold's output folder holds ``best/`` (the model directory), ``log.jsonl``, ``state.json`` and,
while training runs, ``last/`` (the accelerate state for resuming). ``done.json`` marks a finished
fold, whose test predictions are then reused instead of trained again.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .audio import SAMPLE_RATE, collate, crop, normalize
from .config import recompute_before
from .evaluate import prediction_table, score
from .model import EmotionClassifier, ModelConfig


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (learning rates per parameter group, schedule, crops, early stopping).

    ``max_seconds`` crops training clips at random (``None``: whole clips); evaluation always uses
    whole clips. ``mixed_precision="auto"`` is bf16 on CUDA and off on CPU.
    """

    epochs: int = 15
    batch_size: int = 8
    grad_accum: int = 1
    lr_backbone: float = 3e-5
    lr_head: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    schedule: str = "linear"  # "linear" (warm-up then linear decay) | "constant"
    max_seconds: float | None = 3.0
    clip_grad: float = 1.0
    patience: int = 4
    mixed_precision: str = "auto"
    seed: int = 0
    eval_batch_size: int = 16
    num_workers: int | None = None  # data-loading processes; None: 4 with CUDA, else 0
    checkpoint_every: int = 3  # epochs between resumable states (also saved whenever the best improves)

    def to_dict(self) -> dict:
        return asdict(self)


#: The original write-up's optimisation: one AdamW learning rate for everything, no schedule,
#: whole clips.
ORIGINAL_TRAINING = TrainConfig(lr_backbone=2e-5, lr_head=2e-5, warmup_ratio=0.0, schedule="constant",
                                max_seconds=None, clip_grad=0.0)


class ClipDataset(Dataset):
    """Waveforms + labels; in training each item is a random crop of at most ``max_samples``.

    Items are ``(normalised waveform, label, index)``. Crops are seeded by ``(seed, epoch, index)``,
    so they are reproducible and independent of how many loader processes run.
    """

    def __init__(self, waves: Sequence[np.ndarray], labels: Sequence[int], *, max_samples: int | None = None,
                 train: bool = False, normalise: bool = True, seed: int = 0):
        self.waves, self.labels = list(waves), np.asarray(labels, dtype=np.int64)
        self.max_samples, self.train, self.normalise, self.seed = max_samples, train, normalise, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.waves)

    def lengths(self) -> list[int]:
        cap = self.max_samples if self.train and self.max_samples else None
        return [min(len(w), cap) if cap else len(w) for w in self.waves]

    def __getitem__(self, index: int):
        wave = self.waves[index]
        if self.train and self.max_samples:
            wave = crop(wave, self.max_samples, np.random.default_rng([self.seed, self.epoch, index]))
        return (normalize(wave) if self.normalise else wave), int(self.labels[index]), index


class LengthGroupedBatches(Sampler):
    """Batches of similar length (less padding, less wasted compute).

    Training: shuffle, sort within windows of ``50 * batch_size`` clips, cut into batches, shuffle
    the batches (the window keeps batches random, as in Hugging Face's LengthGroupedSampler).
    Evaluation (``shuffle=False``): sorted by length. ``epoch`` seeds each epoch's order.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, shuffle: bool, seed: int = 0):
        self.lengths, self.batch_size, self.shuffle, self.seed = np.asarray(lengths), batch_size, shuffle, seed
        self.epoch = 0

    def _batches(self) -> list[list[int]]:
        if not self.shuffle:
            order = np.argsort(-self.lengths, kind="stable")
            return [order[i:i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        rng = np.random.default_rng([self.seed, self.epoch])
        order, window = rng.permutation(len(self.lengths)), 50 * self.batch_size
        batches = []
        for start in range(0, len(order), window):
            chunk = order[start:start + window]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self):
        yield from self._batches()

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


def collate_items(items):
    """``[(wave, label, index)]`` -> ``(waves (B, T), lengths (B,), labels (B,), indices (B,))``."""
    waves, labels, indices = zip(*items, strict=True)
    batch, lengths = collate(waves)
    return batch, lengths, torch.tensor(labels), torch.tensor(indices)


def _loader(dataset: ClipDataset, batch_size: int, *, shuffle: bool, seed: int, workers: int) -> DataLoader:
    sampler = LengthGroupedBatches(dataset.lengths(), batch_size, shuffle=shuffle, seed=seed)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_items, num_workers=workers,
                      pin_memory=torch.cuda.is_available())


def parameter_groups(model: EmotionClassifier, config: TrainConfig) -> list[dict]:
    """AdamW groups: backbone at ``lr_backbone``, head and layer weights at ``lr_head``; no weight
    decay on biases, norms and the layer weights."""
    groups = {(part, decay): [] for part in ("backbone", "head") for decay in (True, False)}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        part = "backbone" if name.startswith("backbone.") else "head"
        decay = parameter.ndim >= 2
        groups[(part, decay)].append(parameter)
    lr = {"backbone": config.lr_backbone, "head": config.lr_head}
    return [{"params": params, "lr": lr[part], "weight_decay": config.weight_decay if decay else 0.0}
            for (part, decay), params in groups.items() if params]


def _scheduler(optimizer, config: TrainConfig, total_steps: int):
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    warmup = int(config.warmup_ratio * total_steps)
    if config.schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    if config.schedule == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    raise ValueError(f"schedule={config.schedule!r}; choose 'linear' or 'constant'")


def processes_state():
    """The processes of this run (accelerate's ``PartialState``): one, or those ``accelerate launch``
    (or ``torchrun``) started, on GPUs, or on CPUs with the gloo backend when CUDA is absent or
    ``ACCELERATE_USE_CPU`` is set. Created once; everything after shares it."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def _mixed_precision(setting: str) -> str:
    if setting == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return setting


@dataclass
class FoldResult:
    """A trained fold: the best model's folder, its validation UAR and the epoch log."""

    best_dir: Path
    best_val_uar: float
    best_epoch: int
    history: list[dict]
    resumed_from: int = 0


def train_fold(
    make_model: Callable[[], EmotionClassifier],
    train_set: ClipDataset,
    val_set: ClipDataset,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    on_epoch_end: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> FoldResult:
    """Train until early stopping; resume from ``out_dir/last`` if an earlier run was interrupted.

    ``on_epoch_end(record)`` is called after each epoch (e.g. to show a
    curve); an exception raised there interrupts training exactly as a crash would.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from .progress import progress as progress_bar

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(cpu=processes_state().device.type == "cpu",
                              mixed_precision=_mixed_precision(config.mixed_precision),
                              gradient_accumulation_steps=config.grad_accum)
    set_seed(config.seed)
    model = make_model()
    optimizer = torch.optim.AdamW(parameter_groups(model, config))
    workers = config.num_workers if config.num_workers is not None else (4 if torch.cuda.is_available() else 0)
    train_loader = _loader(train_set, config.batch_size, shuffle=True, seed=config.seed, workers=workers)
    val_loader = _loader(val_set, config.eval_batch_size, shuffle=False, seed=config.seed, workers=workers)
    steps_per_epoch = math.ceil(len(train_loader) / config.grad_accum)
    scheduler = _scheduler(optimizer, config, steps_per_epoch * config.epochs)
    sampler = train_loader.batch_sampler
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler)

    state_path, last_dir, log_path = out_dir / "state.json", out_dir / "last", out_dir / "log.jsonl"
    state = {"epoch": 0, "best_val_uar": -1.0, "best_epoch": 0, "bad_epochs": 0}
    resumed_from = 0
    if last_dir.is_dir() and state_path.is_file():
        accelerator.load_state(str(last_dir))
        state = json.loads(state_path.read_text())
        resumed_from = state["epoch"]
        accelerator.print(f"resuming after epoch {resumed_from} (best val UAR {state['best_val_uar']:.3f})")
        if log_path.exists() and accelerator.is_main_process:  # epochs after the saved state run again
            kept = [line for line in log_path.read_text().splitlines()
                    if json.loads(line)["epoch"] <= resumed_from]
            log_path.write_text("".join(f"{line}\n" for line in kept))
    elif log_path.exists() and accelerator.is_main_process:
        log_path.unlink()  # a stale log without a state to resume from
    accelerator.wait_for_everyone()  # every process starts from the same files

    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        if state["bad_epochs"] >= config.patience:
            break
        start = time.perf_counter()
        sampler.epoch = train_set.epoch = epoch
        model.train()
        loss_sum, steps, audio_seconds = 0.0, 0, 0.0
        for waves, lengths, labels, _ in progress_bar(train_loader, desc=f"epoch {epoch}", leave=False,
                                              disable=not progress or not accelerator.is_local_main_process):
            with accelerator.accumulate(model):
                loss = loss_fn(model(waves, lengths), labels)
                accelerator.backward(loss)
                if config.clip_grad and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), config.clip_grad)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            loss_sum, steps = loss_sum + loss.detach(), steps + 1  # no .item(): it would sync every step
            audio_seconds += float(lengths.sum()) / SAMPLE_RATE
        train_seconds = time.perf_counter() - start
        val = evaluate_loader(model, val_loader, accelerator)
        record = {"epoch": epoch, "train_loss": float(loss_sum) / max(steps, 1), "val_loss": val["loss"],
                  "val_accuracy": val["accuracy"], "val_uar": val["uar"],
                  "lr_head": scheduler.get_last_lr()[-1], "train_seconds": round(train_seconds, 2),
                  "train_audio_seconds_per_second": round(audio_seconds / train_seconds, 2),
                  "seconds": round(time.perf_counter() - start, 2)}
        improved = val["uar"] > state["best_val_uar"]
        if improved:
            state.update(best_val_uar=val["uar"], best_epoch=epoch, bad_epochs=0)
            if accelerator.is_main_process:
                accelerator.unwrap_model(model).save_pretrained(out_dir / "best", extra={
                    "training": config.to_dict(), "epoch": epoch, "val_uar": val["uar"]})
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        if accelerator.is_main_process:
            with log_path.open("a") as log:
                log.write(json.dumps({**record, "best": improved}) + "\n")
        # The resumable state (weights + optimizer, ~1 GB for wav2vec2-base) costs seconds to write:
        # every few epochs, and whenever the best improves so that best/ never runs ahead of it.
        if improved or epoch % config.checkpoint_every == 0:
            accelerator.save_state(str(last_dir))
            if accelerator.is_main_process:
                state_path.write_text(json.dumps(state))
        accelerator.wait_for_everyone()
        if on_epoch_end is not None:
            on_epoch_end(record)
    history = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []
    if accelerator.is_main_process:
        shutil.rmtree(last_dir, ignore_errors=True)  # optimizer state: only needed to resume
    accelerator.free_memory()
    return FoldResult(out_dir / "best", state["best_val_uar"], state["best_epoch"], history, resumed_from)


@torch.no_grad()
def evaluate_loader(model, loader: DataLoader, accelerator=None) -> dict:
    """Loss, accuracy and UAR of ``model`` over ``loader`` (whole clips, eval mode)."""
    was_training = model.training
    model.eval()
    logits_all, labels_all = [], []
    for waves, lengths, labels, _ in loader:
        logits = model(waves, lengths).float()
        if accelerator is not None:
            logits, labels = accelerator.gather_for_metrics((logits, labels))
        logits_all.append(logits.cpu())
        labels_all.append(labels.cpu())
    model.train(was_training)
    logits, labels = torch.cat(logits_all), torch.cat(labels_all)
    scores = score(labels.numpy(), logits.argmax(-1).numpy(), model_labels(model, accelerator))
    return {"loss": float(torch.nn.functional.cross_entropy(logits, labels)), "accuracy": scores.accuracy,
            "uar": scores.uar}


def model_labels(model, accelerator=None) -> tuple[str, ...]:
    inner = accelerator.unwrap_model(model) if accelerator is not None else model
    return inner.config.labels


def finetune_predictions(meta, splits, backbone: str, model_config: ModelConfig, config: TrainConfig,
                         out_root: str | Path, system: str, waves: dict[str, np.ndarray], *,
                         on_epoch_end: Callable[[dict], None] | None = None, progress: bool = True):
    """Fine-tune one model per split (a fresh ``backbone`` each time: hub name or local folder) and
    predict its test clips with the best checkpoint.

    ``waves`` maps each clip's path to its 16 kHz waveform (clips missing from it - files that failed
    to load - are left out). Each fold lives in ``out_root/<system>/<protocol>/fold<k>``; a finished
    fold (``done.json``) is not trained again, an interrupted one resumes - except under ``FORCE=1``
    (:func:`config.recompute_before`), which retrains folds made before the run. Returns the predictions
    table (``system, protocol, fold, stem, actor, emotion, predicted``) and each fold's
    :class:`FoldResult` (``None`` for folds reused from disk).
    """
    import pandas as pd

    # Under `accelerate launch` every process trains; only the main one writes files, and the others
    # wait for it wherever they would read what it writes.
    processes = processes_state()
    meta = meta[meta["path"].isin(waves.keys())]
    frames, results = [], []
    for split in splits:
        fold_dir = Path(out_root) / system / split.protocol / f"fold{split.fold}"
        done = fold_dir / "done.json"
        fingerprint = fold_fingerprint(split, meta, backbone, model_config, config)
        forced = recompute_before(folds=True)
        stamp = fold_dir / "fingerprint.txt"
        outdated = forced is not None and stamp.is_file() and stamp.stat().st_mtime < forced
        processes.wait_for_everyone()  # every process has looked before the main one removes anything
        if outdated and processes.is_main_process:
            shutil.rmtree(fold_dir)  # FORCE=1 (without KEEP_FOLDS=1): folds from before this run are retrained
        processes.wait_for_everyone()
        if done.is_file() and json.loads(done.read_text()).get("fingerprint") == fingerprint:
            frames.append(pd.read_csv(fold_dir / "predictions.csv", dtype={"stem": str}))
            results.append(None)
            continue
        if processes.is_main_process:
            if fold_dir.is_dir() and (not stamp.is_file() or stamp.read_text() != fingerprint):
                shutil.rmtree(fold_dir)  # made from other data, model or settings: start this fold afresh
            fold_dir.mkdir(parents=True, exist_ok=True)
            stamp.write_text(fingerprint)
        processes.wait_for_everyone()
        train, val, test = split.frames(meta)
        label_index = {name: i for i, name in enumerate(model_config.labels)}
        datasets = [ClipDataset([waves[p] for p in part["path"]],
                                part["emotion"].astype(str).map(label_index).to_numpy(),
                                max_samples=int(config.max_seconds * SAMPLE_RATE) if config.max_seconds else None,
                                train=is_train, seed=config.seed)
                    for part, is_train in ((train, True), (val, False))]
        result = train_fold(lambda: EmotionClassifier.from_backbone(backbone, model_config), *datasets,
                            config, fold_dir, on_epoch_end=on_epoch_end, progress=progress)
        if processes.is_main_process:
            best = EmotionClassifier.from_pretrained(result.best_dir).to(processes.device)
            probs = best.predict_proba([waves[p] for p in test["path"]], batch_size=config.eval_batch_size)
            table = prediction_table(system, split.protocol, split.fold, test,
                                     np.asarray(best.config.labels)[probs.argmax(1)])
            table.to_csv(fold_dir / "predictions.csv", index=False)
            done.write_text(json.dumps({"best_epoch": result.best_epoch, "best_val_uar": result.best_val_uar,
                                        "training": config.to_dict(), "fingerprint": fingerprint}))
        processes.wait_for_everyone()
        frames.append(pd.read_csv(fold_dir / "predictions.csv", dtype={"stem": str}))
        results.append(result)
    return pd.concat(frames, ignore_index=True), results


def fold_fingerprint(split, meta, backbone: str, model_config: ModelConfig, config: TrainConfig) -> str:
    """What a trained fold depends on: the clips of its split (names and content), the backbone, the
    model and training settings, and the code of training, the model and audio loading. A finished fold
    is reused only when this is unchanged."""
    from . import audio, model
    from .cache import file_digest, params_digest
    from .fingerprint import code_digest, model_fingerprint

    clips = meta[meta["stem"].isin(set(split.train) | set(split.val) | set(split.test))]
    content = {stem: file_digest(path) for stem, path in zip(clips["stem"], clips["path"], strict=True)}
    return params_digest({"split": split.to_dict(), "content": content, "backbone": model_fingerprint(backbone),
                          "model": model_config.to_dict(), "training": config.to_dict(),
                          "code": code_digest(audio, model, sys.modules[__name__])})
