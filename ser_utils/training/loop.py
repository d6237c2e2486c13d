"""Fine-tuning loop for :class:`~ser_utils.models.classifier.EmotionClassifier` (Hugging Face ``accelerate``).

One loop for CPU, one GPU, or several GPUs / machines (``accelerate launch``): AdamW with separate
learning rates for backbone and head, warm-up then decay, gradient clipping, bf16 mixed precision where
the hardware has it (CUDA, CPUs with native bf16), gradient accumulation, random crops in training and
full clips in evaluation, length-grouped batches, early stopping on validation UAR keeping the best
checkpoint, a JSON log line per epoch, and resume after an interruption. It trains any module whose
batches are ``(inputs, labels, audio seconds)`` and whose ``forward(*inputs)`` gives logits: clips
(:class:`~ser_utils.training.batches.ClipDataset`) or cached lower-layer states for partial
fine-tuning (:mod:`ser_utils.training.partial`).

A fold's output folder (:class:`FoldFolder`, the one owner of its layout) holds ``best/`` (the model
directory), ``log.jsonl``, ``state.json`` and, while training runs, ``last/`` (the accelerate state for
resuming); :mod:`ser_utils.study.finetuning` adds ``fingerprint.txt``, ``predictions.csv`` and ``done.json``,
which marks a finished fold whose test predictions are then reused instead of trained again.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..core.atomic import atomic_write_text
from ..core.device import autocast_dtype, default_device
from ..evaluation.metrics import score
from .batches import LengthGroupedBatches, clip_loader

SCHEDULES = ("linear", "constant")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (learning rates per parameter group, schedule, crops, early stopping).

    ``max_seconds`` crops training clips at random (``None``: whole clips); evaluation always uses
    whole clips. ``mixed_precision="auto"`` is bf16 where the hardware runs it natively
    (CUDA, CPUs with AVX512-BF16 or AMX) and off elsewhere or with ``SER_PRECISION=fp32``. Settings are checked when
    the config is built, so a typo fails at once rather than epochs later.
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

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}; choose one of {SCHEDULES}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision={self.mixed_precision!r}; choose one of {MIXED_PRECISION}")
        for name in ("epochs", "batch_size", "grad_accum", "patience", "eval_batch_size", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; must be a whole number >= 1")
        if self.lr_head <= 0 or self.lr_backbone < 0:
            raise ValueError(f"learning rates must be positive: lr_head={self.lr_head}, lr_backbone={self.lr_backbone}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio={self.warmup_ratio}; must be in [0, 1)")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds={self.max_seconds}; must be positive (None: whole clips)")
        if self.weight_decay < 0 or self.clip_grad < 0:
            raise ValueError(f"weight_decay={self.weight_decay} and clip_grad={self.clip_grad} must be >= 0")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"num_workers={self.num_workers}; must be >= 0 (None: automatic)")

    def to_dict(self) -> dict:
        return asdict(self)


#: The original write-up's optimisation: one AdamW learning rate for everything, no schedule,
#: whole clips.
ORIGINAL_TRAINING = TrainConfig(lr_backbone=2e-5, lr_head=2e-5, warmup_ratio=0.0, schedule="constant",
                                max_seconds=None, clip_grad=0.0)


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """AdamW groups of an :class:`EmotionClassifier` (or a model holding one as ``classifier``): backbone at
    ``lr_backbone``, head and layer weights at ``lr_head``; no weight decay on biases, norms and the layer
    weights. Only parameters that train."""
    model = getattr(model, "classifier", model)
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
    return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)  # checked in TrainConfig


def processes_state():
    """The processes of this run (accelerate's ``PartialState``): one, or those ``accelerate launch``
    (or ``torchrun``) started, on GPUs, or on CPUs with the gloo backend when CUDA is absent or
    ``ACCELERATE_USE_CPU`` is set. Created once; everything after shares it."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def _mixed_precision(setting: str) -> str:
    """``auto``: bf16 where the hardware runs it natively (CUDA, CPUs with AVX512-BF16 or AMX: 1.9x faster
    training on this project's 2-core machine), else off; ``SER_PRECISION=fp32`` turns it off."""
    if setting == "auto":
        return "bf16" if autocast_dtype(default_device()) == torch.bfloat16 else "no"
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
    make_model: Callable[[], nn.Module],
    train_set: Dataset,
    val_set: Dataset,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    on_epoch_end: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> FoldResult:
    """Train until early stopping; resume from ``out_dir/last`` if an earlier run was interrupted.

    ``on_epoch_end(record)`` is called after each epoch (e.g. to show a
    curve); an exception raised there interrupts training exactly as a crash would. With ``progress``,
    a bar per fold shows the epoch, the validation UAR so far and the time left (and one per epoch).
    """
    from ..core.progress import progress as progress_bar

    files = FoldFolder(Path(out_dir))
    files.root.mkdir(parents=True, exist_ok=True)
    run = _prepare(make_model, train_set, val_set, config)
    state, resumed_from = _resume(run.accelerator, files)
    bar = progress_bar(total=config.epochs, initial=state["epoch"], unit="epoch", desc=_fold_name(files.root),
                       disable=not progress or not run.accelerator.is_local_main_process)
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        if state["bad_epochs"] >= config.patience:
            break
        run.sampler.epoch = train_set.epoch = epoch
        record = _train_epoch(run, epoch, config, progress)
        improved = _keep_if_best(run, state, record, config, files)
        _log_and_checkpoint(run, state, record, improved, config, files)
        bar.set_postfix(val_uar=f"{record['val_uar']:.3f}", best=f"{state['best_val_uar']:.3f}")
        bar.update(1)
        if on_epoch_end is not None:
            on_epoch_end(record)
    bar.close()
    history = [json.loads(line) for line in files.log.read_text().splitlines()] if files.log.exists() else []
    if run.accelerator.is_main_process:
        shutil.rmtree(files.last, ignore_errors=True)  # optimizer state: only needed to resume
    run.accelerator.free_memory()
    return FoldResult(files.best, state["best_val_uar"], state["best_epoch"], history, resumed_from)


def _fold_name(root: Path) -> str:
    """``<system> <protocol> fold<k>`` from a fold folder's path (the progress bar's label)."""
    return " ".join(root.parts[-3:])


@dataclass(frozen=True)
class FoldFolder:
    """A fine-tuning fold's folder, ``<out_root>/<system>/<protocol>/fold<k>``: every path in it.

    Written by :func:`train_fold`: ``best/`` (the best epoch's model directory), ``last/`` (the resumable
    accelerate state, removed when training ends), ``state.json`` (the loop's state) and ``log.jsonl``
    (one line per epoch). Written by :mod:`ser_utils.study.finetuning`: ``fingerprint.txt`` (what the fold was
    trained from), ``predictions.csv`` (its test clips) and ``done.json`` (finished; its fingerprint).
    """

    root: Path

    @classmethod
    def of(cls, out_root: str | Path, system: str, protocol: str, fold: int) -> FoldFolder:
        return cls(Path(out_root) / system / protocol / f"fold{fold}")

    @property
    def best(self) -> Path:
        return self.root / "best"

    @property
    def last(self) -> Path:
        return self.root / "last"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def fingerprint(self) -> Path:
        return self.root / "fingerprint.txt"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.csv"

    @property
    def done(self) -> Path:
        return self.root / "done.json"

    def finished(self, fingerprint: str) -> bool:
        """Whether the fold was finished from inputs with this ``fingerprint``."""
        try:
            return json.loads(self.done.read_text()).get("fingerprint") == fingerprint
        except (OSError, ValueError, AttributeError):
            return False

    def history(self):
        """The epoch log as a table (``pandas``)."""
        import pandas as pd

        return pd.read_json(self.log, lines=True)


@dataclass
class _Run:
    """What the loop works on, after ``accelerator.prepare``; ``sampler`` is the training loader's."""

    accelerator: Any
    model: Any
    optimizer: Any
    train_loader: DataLoader
    val_loader: DataLoader
    scheduler: Any
    sampler: LengthGroupedBatches


def _prepare(make_model: Callable[[], nn.Module], train_set: Dataset, val_set: Dataset,
             config: TrainConfig) -> _Run:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator(cpu=processes_state().device.type == "cpu",
                              mixed_precision=_mixed_precision(config.mixed_precision),
                              gradient_accumulation_steps=config.grad_accum)
    set_seed(config.seed)
    model = make_model()
    for dataset in (train_set, val_set):  # the model decides, as in prediction (never for Whisper)
        dataset.normalize = model.config.normalize
    optimizer = torch.optim.AdamW(parameter_groups(model, config))
    workers = config.num_workers if config.num_workers is not None else (4 if torch.cuda.is_available() else 0)
    train_loader = clip_loader(train_set, config.batch_size, shuffle=True, seed=config.seed, workers=workers)
    val_loader = clip_loader(val_set, config.eval_batch_size, shuffle=False, seed=config.seed, workers=workers)
    steps_per_epoch = math.ceil(len(train_loader) / config.grad_accum)
    scheduler = _scheduler(optimizer, config, steps_per_epoch * config.epochs)
    sampler = train_loader.batch_sampler
    return _Run(accelerator, *accelerator.prepare(model, optimizer, train_loader, val_loader, scheduler),
                sampler=sampler)


def _resume(accelerator, files: FoldFolder) -> tuple[dict, int]:
    """The loop state to go on from (the saved one after an interruption) and the epoch it resumes after.
    Only the main process edits the log; every process starts from the same files."""
    state, resumed_from = {"epoch": 0, "best_val_uar": -1.0, "best_epoch": 0, "bad_epochs": 0}, 0
    if files.last.is_dir() and files.state.is_file():
        accelerator.load_state(str(files.last))
        state = json.loads(files.state.read_text())
        resumed_from = state["epoch"]
        accelerator.print(f"resuming after epoch {resumed_from} (best val UAR {state['best_val_uar']:.3f})")
        if files.log.exists() and accelerator.is_main_process:  # epochs after the saved state run again
            kept = [line for line in files.log.read_text().splitlines()
                    if json.loads(line)["epoch"] <= resumed_from]
            atomic_write_text(files.log, "".join(f"{line}\n" for line in kept))
    elif files.log.exists() and accelerator.is_main_process:
        files.log.unlink()  # a stale log without a state to resume from
    accelerator.wait_for_everyone()
    return state, resumed_from


def _train_epoch(run: _Run, epoch: int, config: TrainConfig, progress: bool) -> dict:
    """One pass over the training clips, then validation; returns the epoch's log record."""
    from ..core.progress import progress as progress_bar

    accelerator, model = run.accelerator, run.model
    loss_fn = torch.nn.CrossEntropyLoss()
    start = time.perf_counter()
    model.train()
    loss_sum, steps, audio_seconds = 0.0, 0, 0.0
    for inputs, labels, seconds in progress_bar(run.train_loader, desc=f"epoch {epoch}", leave=False,
                                                disable=not progress or not accelerator.is_local_main_process):
        with accelerator.accumulate(model):
            loss = loss_fn(model(*inputs), labels)
            accelerator.backward(loss)
            if config.clip_grad and accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), config.clip_grad)
            run.optimizer.step()
            run.scheduler.step()
            run.optimizer.zero_grad()
        loss_sum, steps = loss_sum + loss.detach(), steps + 1  # no .item(): it would sync every step
        audio_seconds += seconds
    train_seconds = time.perf_counter() - start
    val = evaluate_loader(model, run.val_loader, accelerator)
    return {"epoch": epoch, "train_loss": float(loss_sum) / max(steps, 1), "val_loss": val["loss"],
            "val_accuracy": val["accuracy"], "val_uar": val["uar"],
            "lr_head": run.scheduler.get_last_lr()[-1], "train_seconds": round(train_seconds, 2),
            "train_audio_seconds_per_second": round(audio_seconds / train_seconds, 2),
            "seconds": round(time.perf_counter() - start, 2)}


def _keep_if_best(run: _Run, state: dict, record: dict, config: TrainConfig, files: FoldFolder) -> bool:
    """Early-stopping bookkeeping; an improved model is saved to ``best/``. Returns whether it improved."""
    improved = record["val_uar"] > state["best_val_uar"]
    if improved:
        state.update(best_val_uar=record["val_uar"], best_epoch=record["epoch"], bad_epochs=0)
        if run.accelerator.is_main_process:
            run.accelerator.unwrap_model(run.model).save_pretrained(files.best, extra={
                "training": config.to_dict(), "epoch": record["epoch"], "val_uar": record["val_uar"]})
    else:
        state["bad_epochs"] += 1
    state["epoch"] = record["epoch"]
    return improved


def _log_and_checkpoint(run: _Run, state: dict, record: dict, improved: bool, config: TrainConfig,
                        files: FoldFolder) -> None:
    accelerator = run.accelerator
    if accelerator.is_main_process:
        with files.log.open("a") as log:
            log.write(json.dumps({**record, "best": improved}) + "\n")
    # The resumable state (weights + optimizer, ~1 GB for wav2vec2-base) costs seconds to write:
    # every few epochs, and whenever the best improves so that best/ never runs ahead of it.
    if improved or record["epoch"] % config.checkpoint_every == 0:
        accelerator.save_state(str(files.last))
        if accelerator.is_main_process:
            atomic_write_text(files.state, json.dumps(state))
    accelerator.wait_for_everyone()


@torch.no_grad()
def loader_logits(model, loader: DataLoader, accelerator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``model``'s logits ``(N, classes)`` (float32) and the labels ``(N,)`` over ``loader``, in eval mode."""
    was_training = model.training
    model.eval()
    logits_all, labels_all = [], []
    for inputs, labels, _ in loader:
        logits = model(*inputs).float()
        if accelerator is not None:
            logits, labels = accelerator.gather_for_metrics((logits, labels))
        logits_all.append(logits.cpu())
        labels_all.append(labels.cpu())
    model.train(was_training)
    return torch.cat(logits_all), torch.cat(labels_all)


def evaluate_loader(model, loader: DataLoader, accelerator=None) -> dict:
    """Loss, accuracy and UAR of ``model`` over ``loader`` (whole clips, eval mode)."""
    logits, labels = loader_logits(model, loader, accelerator)
    scores = score(labels.numpy(), logits.argmax(-1).numpy(), model_labels(model, accelerator))
    return {"loss": float(torch.nn.functional.cross_entropy(logits, labels)), "accuracy": scores.accuracy,
            "uar": scores.uar}


def model_labels(model, accelerator=None) -> tuple[str, ...]:
    inner = accelerator.unwrap_model(model) if accelerator is not None else model
    return inner.config.labels
