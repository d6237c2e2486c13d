"""System names, and what a name tells a reader: the one owner of the naming rules.

* pretrained encoders: ``<prefix>-<recipe>-<mode>``, e.g. ``w2v2-project-frozen``, ``whisper-original-ft``
  (prefix per family: :data:`FAMILY_PREFIXES`; mode ``frozen`` or ``ft``);
* handcrafted baselines: ``<features>+<classifier>``, e.g. ``egemaps+logreg``;
* either with speaker normalization: ``+spknorm`` (all of a speaker's clips, transductive) or
  ``+spknorm-k<N>`` (N enrolment clips per speaker).
"""

from __future__ import annotations

import re

#: Enrolment clips per speaker of ``speaker-k`` when the name gives no number.
DEFAULT_ENROLMENT_CLIPS = 10


def parse_normalization(text: str) -> tuple[str, int | None]:
    """A normalisation setting's name -> ``(kind, clips)``: ``none``, ``speaker``, ``speaker-k`` (k = 10)
    or ``speaker-k<N>``, e.g. ``speaker-k5`` -> ``("speaker-k", 5)``; ``ValueError`` otherwise."""
    if text in ("none", "speaker"):
        return text, None
    digits = text[len("speaker-k"):] if isinstance(text, str) and text.startswith("speaker-k") else None
    if digits is not None and (digits == "" or (digits.isdigit() and int(digits) > 0)):
        return "speaker-k", int(digits or DEFAULT_ENROLMENT_CLIPS)
    raise ValueError(f"normalization {text!r}: choose none, speaker, speaker-k or speaker-k<N>")


#: System-name prefix of each backbone family (``model_type``).
FAMILY_PREFIXES = {"wav2vec2": "w2v2", "hubert": "hubert", "wavlm": "wavlm", "data2vec-audio": "data2vec",
                   "whisper": "whisper"}
MODES = {"frozen": "frozen", "finetune": "ft"}


def encoder_system(family: str, recipe: str, mode: str) -> str:
    """``encoder_system("whisper", "project", "frozen")`` -> ``"whisper-project-frozen"``."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; choose one of {tuple(MODES)}")
    return f"{FAMILY_PREFIXES[family]}-{recipe}-{MODES[mode]}"


def system_kind(system: str) -> str:
    """The family of a pretrained-encoder system (``"wav2vec2"``, ``"whisper"``, ...), else ``"baseline"``."""
    prefix = system.split("-", 1)[0]
    families = {p: f for f, p in FAMILY_PREFIXES.items()}
    return families.get(prefix, "baseline") if "-" in system else "baseline"


def speaker_use(system: str) -> str:
    """What ``system`` uses of a test speaker at test time: ``"nothing"`` (inductive), ``"enrolment"``
    (``+spknorm-kN``: N unlabelled clips) or ``"all clips"`` (``+spknorm``: every unlabelled clip, transductive)."""
    if re.search(r"\+spknorm-k\d+$", system):
        return "enrolment"
    return "all clips" if system.endswith("+spknorm") else "nothing"


def system_type(system: str) -> str:
    """``"handcrafted"`` (a baseline), ``"frozen"`` or ``"fine-tuned"`` (``-ft``, ``-ft-topK``) encoder system."""
    if system_kind(system) == "baseline":
        return "handcrafted"
    return "fine-tuned" if re.search(r"-ft(-top\d+)?(\+|$)", system) else "frozen"


def system_note(system: str) -> str:
    """What a reader must know about a system's numbers: how it was trained or chosen, and how a
    speaker-normalized one was normalized (notes joined by "; ")."""
    notes = []
    partial = re.search(r"-ft-top(\d+)$", system)
    if partial:
        notes.append(f"partial fine-tuning: the top {partial.group(1)} encoder layer(s), layer weights and head "
                     "trained (from cached lower-layer states), the layers below frozen")
    if re.search(r"-selected-frozen(\+|$)", system):
        notes.append("frozen head chosen per split by inner cross-validation on the training actors (ridge, "
                     "logistic regression or shrinkage LDA on every layer's mean and std, or an MLP with mean or "
                     "mean+std pooling)")
    enrolment = re.search(r"\+spknorm-k(\d+)$", system)
    if enrolment:
        notes.append(f"speaker-normalized: statistics from {enrolment.group(1)} unlabelled clips per speaker")
    elif system.endswith("+spknorm"):
        notes.append("transductive: each speaker standardised with all of their own unlabelled clips, "
                     "test speakers included")
    return "; ".join(notes)


def guess_family(name: str) -> str:
    """The family a backbone name suggests, for rows of a backbone that could not be loaded (its config
    is what decides when it can): ``whisper`` for Whisper names, else by the name, else ``wav2vec2``."""
    lowered = name.lower()
    for family in ("whisper", "hubert", "wavlm", "data2vec"):
        if family in lowered:
            return "data2vec-audio" if family == "data2vec" else family
    return "wav2vec2"


def model_folder(family: str, mode: str, speaker_normalized: bool = False) -> str:
    """The exported model folder of a pretrained-encoder system under ``models_dir``: ``<family>-frozen``
    (``-frozen-spknorm``) for a frozen encoder with its head, ``<family>-ser`` for a fine-tuned one."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; choose one of {tuple(MODES)}")
    return f"{family}-ser" if mode == "finetune" else f"{family}-frozen" + ("-spknorm" if speaker_normalized else "")


#: Every exported model folder the study writes, in the order notebook 06 shows them.
MODEL_FOLDERS = ("baseline", "baseline-spknorm", *(model_folder(family, mode, normed) for family in FAMILY_PREFIXES
                                                   for mode, normed in (("frozen", False), ("frozen", True),
                                                                        ("finetune", False))))
