"""Speech emotion recognition on RAVDESS: corpus, protocols, features, wav2vec 2.0 and scoring.

The notebooks in ``notebooks/`` tell the story; this package does the work. Modules:

``config``     profiles (full / smoke), paths, environment overrides
``corpus``     RAVDESS file-name grammar, discovery, validation, download
``audio``      the one audio loader (float32 mono 16 kHz) and waveform helpers
``splits``     the evaluation protocols (random-80-20, actor-kfold = EmoBox folds)
``evaluate``   the one scoring function and the tidy result tables
``synthetic``  a generated RAVDESS-named corpus for the smoke profile and tests
``report``     provenance headers;  ``pipeline``  papermill runner behind ``make all``
"""

__version__ = "0.1.0"
