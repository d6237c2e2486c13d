"""The study's terms, explained once: ``reports/glossary.html`` and the links from every table.

Each entry is ``(anchor, term, explanation)``; an explanation may hold HTML (links, code). Tables link
a term with :func:`term_link`, so a reader who meets ``spknorm-k10`` is one click from what it means.
"""

from __future__ import annotations

import html

TERMS: tuple[tuple[str, str, str], ...] = (
    ("uar", "UAR (unweighted average recall)",
     "The mean over the 8 emotions of the share of each emotion's clips recognised correctly (balanced accuracy). "
     "Chance is 12.5 %. The study's main metric: neutral has half as many clips as the other emotions, and UAR "
     "weighs every emotion equally. Shown in %, mean ± standard deviation over folds (or random seeds)."),
    ("wa", "WA (weighted accuracy, accuracy)",
     "The share of all test clips recognised correctly; emotions with more clips weigh more."),
    ("macro-f1", "Macro-F1", "The mean over emotions of each emotion's F1 score (harmonic mean of precision and "
     "recall)."),
    ("interval", "95 % bootstrap interval",
     "The range in brackets after a number: test clips resampled within each fold 1,000 times; 95 % of the "
     "resampled means fall inside it. It shows how much the finite test set alone moves the number."),
    ("actor-kfold", "actor-kfold (primary protocol)",
     "Actor-independent 6-fold cross-validation on exactly the folds of the EmoBox benchmark: each fold tests 4 "
     "actors (240 clips) never heard in training, and every clip is tested once. Every choice is made inside the "
     "training actors (see <a href='#inner-cv'>inner cross-validation</a>), never on test actors. Numbers compare "
     "with EmoBox's published ones."),
    ("random-80-20", "random-80-20",
     "The original write-up's protocol: a stratified random 80/20 split of the clips, repeated with several seeds. "
     "Every actor is in training and test, so a model can recognise the actor's way of acting rather than the "
     "emotion: it over-states accuracy on new speakers. Reported for comparability only."),
    ("inner-cv", "inner cross-validation (inner CV)",
     "How the study chooses a grid point, a head or a penalty: inside each split, the training clips are cut into 4 "
     "inner folds (grouped by actor under actor-kfold, so no actor is on both sides; stratified by class under "
     "random-80-20, where the inner score is optimistic); every candidate is fitted and scored on every inner fold, "
     "the best mean inner UAR wins, and it is refitted on all training clips. Test clips never take part. The "
     "recipes' own heads (original, project) stop early on two validation actors taken from the training actors, "
     "as their recipes say."),
    ("inductive", "Uses nothing of the test speaker (inductive)",
     "The system sees only the test clip itself: what a deployed model does on a new speaker."),
    ("spknorm-k10", "+spknorm-k10 (enrolment)",
     "Speaker normalization with 10 enrolment clips: each speaker's features (or embeddings) are standardised "
     "with the mean and standard deviation of 10 random unlabelled clips of that speaker. Realistic when a "
     "system can record a few seconds of a new speaker first."),
    ("spknorm", "+spknorm (transductive)",
     "Speaker normalization with a speaker's own unlabelled clips: training speakers with their training clips, "
     "a test speaker with all of their test clips (transductive: the test speaker's audio is used at test time, "
     "without labels); the prior variance comes from the training speakers only. On RAVDESS, where every actor "
     "records every emotion equally often, it is optimistic: an upper bound, not what a model does on a new "
     "speaker."),
    ("transductive", "Transductive",
     "Uses the unlabelled test data itself (here: all of the test speaker's clips) when making predictions."),
    ("frozen", "Frozen encoder",
     "The pretrained encoder's weights stay fixed: its hidden states are computed once per clip (cached), and only "
     "a small head is trained on them. Runs on a CPU."),
    ("fine-tuned", "Fine-tuned", "Encoder layers are trained together with the head. <code>-ft</code>: the whole "
     "encoder (needs a GPU); <code>-ft-topK</code>: only the top K encoder layers, from cached states of the layers "
     "below (runs on a CPU)."),
    ("original-recipe", "original recipe",
     "The write-up's head: the last hidden layer's first frame (\"CLS-like\"), Linear -> ReLU -> Dropout -> Linear."),
    ("project-recipe", "project recipe",
     "The project's head: a learned weighted sum of all hidden layers, mean pooling over the clip's frames (padding "
     "masked), a small MLP, warm-up and decay."),
    ("selected", "selected head (<code>-selected-frozen</code>)",
     "A head chosen per split among candidates on the same cached embeddings (ridge, multinomial logistic "
     "regression and shrinkage linear discriminant analysis on every layer's mean and std, each penalty or "
     "shrinkage a candidate; the project's MLP with mean or mean+std pooling) by "
     "<a href='#inner-cv'>inner cross-validation</a> on the training actors; never by test UAR."),
    ("post-hoc", "post hoc", "Computed after the fact on the test folds, for insight only: a post hoc best is not a "
     "result a model could have chosen, and is labelled so."),
    ("mfcc-set", "mfcc-set",
     "Handcrafted features (librosa): MFCCs with deltas, log-mel bands, chroma, tonnetz, spectral contrast, "
     "zero-crossing rate, RMS energy, spectral centroid, bandwidth and roll-off, each summarised over the clip."),
    ("original-set", "original-set", "The write-up's four feature families only: MFCC, chroma, "
     "tonnetz and spectral contrast, summarised over the clip as in <code>mfcc-set</code>."),
    ("egemaps", "eGeMAPS", "The extended Geneva Minimalistic Acoustic Parameter Set (88 functionals of pitch, "
     "loudness, voice quality and spectral shape), computed with openSMILE: the field's standard compact set."),
    ("classifiers", "logreg, svm, rf, mlp",
     "scikit-learn classifiers of the handcrafted systems: logistic regression, support-vector machine (RBF), "
     "random forest (100 trees), multi-layer perceptron (early stopping); each with feature standardisation and a "
     "small grid chosen by <a href='#inner-cv'>inner cross-validation</a>."),
    ("mcnemar", "McNemar's exact test",
     "Compares two systems on the same test clips: of the clips exactly one of them got right, is the split "
     "further from 50/50 than chance would make it? A small p-value (say below 0.05) means the difference is "
     "unlikely to be luck of the test clips."),
    ("emobox", "EmoBox", "A benchmark of speech emotion recognition (Ma et al., Interspeech 2024) whose RAVDESS "
     "folds this study uses; its leaderboard reports frozen encoders with a small head."),
)

ANCHORS = {anchor for anchor, _, _ in TERMS}


def term_link(anchor: str, text: str | None = None, *, page: str = "glossary.html") -> str:
    """``<a href="glossary.html#anchor">text</a>``; ``KeyError`` for an unknown anchor (a broken link)."""
    if anchor not in ANCHORS:
        raise KeyError(f"no glossary entry {anchor!r}")
    return f"<a class='term' href='{page}#{anchor}'>{html.escape(text or anchor)}</a>"


def glossary_html() -> str:
    """The glossary as an HTML definition list."""
    items = "".join(f"<dt id='{anchor}'>{term}</dt><dd>{text}</dd>" for anchor, term, text in TERMS)
    return f"<dl class='glossary'>{items}</dl>"
