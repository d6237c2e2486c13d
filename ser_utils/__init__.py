"""Speech emotion recognition on RAVDESS: corpus, protocols, features, wav2vec 2.0 and scoring.

The notebooks in ``notebooks/`` tell the story; this package does the work. Modules, lower rooms first
(a module imports only from rooms above it in this list, never back up):

``config``       profiles (full / smoke), protocol names, paths, environment overrides
``progress``     progress bars, switched off in headless runs;  ``device``  precision and batch size
``audio``        the one audio loader (float32 mono 16 kHz) and waveform helpers (crop, normalise, batch)
``corpus``       RAVDESS file-name grammar, discovery, validation, download, the quick subset
``splits``       the evaluation protocols (random-80-20, actor-kfold = EmoBox folds)
``cache``        content-keyed on-disk cache with a parallel, resumable map; checkpoint fingerprints
``evaluate``     the one scoring function, and the one writer of each result file
``synthetic``    a generated RAVDESS-named corpus and a tiny random wav2vec2 (smoke profile, tests)
``features/``    handcrafted features: ``base``, ``mfcc_set`` (one-STFT librosa families), ``egemaps``,
                 ``extraction`` (feature tables of a corpus)
``model``        wav2vec2 classifier (pooling, layer weighting, freezing; padding-invariant)
``sources``      what a profile's corpus and backbone are: local, downloaded, or generated (smoke)
``baselines``    scikit-learn classifiers, validation-only selection, evaluation under the protocols
``importance``   fold models refit, permutation importance of feature families
``baseline_model``  the deployable baseline pipeline (save_pretrained / from_pretrained)
``batches``      clips with random training crops, length-grouped batches, collation
``train``        the fine-tuning loop (accelerate);  ``embeddings``  frozen-embedding cache and heads
``systems``      the wav2vec2 recipes and how each runs under a protocol (frozen, fine-tuned)
``results``      tables across systems: comparison, bootstrap intervals, best system, errors, significance
``predict``      EmotionRecognizer, the predict and evaluate commands
``eda`` ``plots`` ``report`` ``pipeline`` ``__main__``   analysis figures, provenance, papermill runner, CLI
"""

__version__ = "0.1.0"
