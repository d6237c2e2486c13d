"""Speech emotion recognition on RAVDESS: corpus, protocols, features, pretrained encoders and scoring.

The notebooks in ``notebooks/`` tell the story; this package does the work. Its sub-packages, lower
layers first (each imports only the layers listed before it, never one below it in this list; a test
reads the imports and checks this order):

``core/``        profiles, paths and the results-folder layout, atomic IO, cache, fingerprints, console, progress,
                 interrupts, device and precision, system names
``data/``        the one audio loader, folder scans, the RAVDESS corpus, synthetic corpora
``evaluation/``  the protocols (EmoBox folds, random split) and the metrics
``features/``    handcrafted features (librosa families, eGeMAPS) and speaker normalization of features
``backbones/``   pretrained encoders behind one interface (waves in; hidden states and a frame mask out), and
                 tiny random checkpoints laid out as hub repositories (smoke profile, tests)
``models/``      heads and pooling, the fine-tuned, frozen and baseline models, the model folder, the deployable
                 interface
``training/``    batches, the fine-tuning loop, the frozen-embedding cache and frozen-head training
``serving/``     the recognizer (predict) and its audio files, manifests, groups and outputs
``results/``     every result file's reader and writer, tables, compare, report, plots
``study/``       what the notebooks run: baselines, frozen and fine-tuned systems, the normalization study,
                 importance, cross-corpus, sources, EDA
``cli/``         the commands and the papermill runner (argument parsing only in ``__main__``)

Each sub-package's ``__init__`` says what it owns and what it may import.
"""

__version__ = "0.1.0"
