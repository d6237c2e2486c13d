"""Speech emotion recognition on RAVDESS: corpus, protocols, features, wav2vec 2.0 and scoring.

The notebooks in ``notebooks/`` tell the story; this package does the work. Modules, lower rooms first
(a module imports only from rooms above it in this list, never back up):

``config``       profiles (full / smoke), protocol names, paths, environment overrides
``progress``     progress bars, switched off in headless runs;  ``device``  precision and batch size
``atomic``       every output file written whole or not at all (temp file, fsync, rename)
``interrupts``   Ctrl-C / SIGTERM stop a run between files;  ``console``  the CLI's stdout and stderr lines
``audio``        the one audio loader (float32 mono 16 kHz, read in blocks) and waveform helpers (crop,
                 normalize, batch, silence, level)
``scan``         which files are audio (every format soundfile reads), folder walks of any depth
``cache``        content-keyed on-disk cache with a parallel, resumable map
``corpus``       RAVDESS file-name grammar, discovery, validation, download, the quick subset
``splits``       the evaluation protocols (random-80-20, actor-kfold = EmoBox folds)
``fingerprint``  digests of code, corpus listings and backbone weights (what caches and the pipeline key on)
``evaluate``     the one scoring function, and the one writer of each result file
``synthetic``    generated corpora: RAVDESS-named, and a shifted second one (smoke profile, tests)
``features/``    handcrafted features: ``base``, ``mfcc_set`` (one-STFT librosa families), ``egemaps``,
                 ``extraction`` (feature tables of a corpus)
``normalization``  speaker normalization of features (per-speaker statistics, no labels), prediction-time
                 adaptation
``backbones``    SSL backbones by model_type (wav2vec2, HuBERT, WavLM, data2vec-audio), strict loading,
                 the masked group norm that keeps padding out
``checkpoints``  tiny random checkpoints laid out as hub repositories (smoke profile, tests)
``model``        emotion classifier on a backbone (pooling, layer weighting, freezing; padding-invariant)
``sources``      what a profile's corpus and backbone are: local, downloaded, or generated (smoke)
``baselines``    scikit-learn classifiers, validation-only selection, evaluation under the protocols
``importance``   fold models refit, permutation importance of feature families
``baseline_model``  the deployable baseline pipeline (save_pretrained / from_pretrained)
``batches``      clips with random training crops, length-grouped batches, collation
``train``        the fine-tuning loop (accelerate);  ``embeddings``  frozen-embedding cache and heads
``normalized_systems``  baselines and frozen heads with speaker normalization, the enrolment curve
``systems``      the wav2vec2 recipes and how each runs under a protocol (frozen, fine-tuned)
``results``      tables across systems: comparison, bootstrap intervals, best system, errors, significance
``compare``      do two results folders agree within their bootstrap intervals (``compare-results``)
``predict``      EmotionRecognizer: windows, batches, groups; load once, predict many
``prediction_io``  audio files of folders, manifests, output checks, per-file lines, CSV and strict JSON
``crosscorpus``  other corpora: --adapt none/corpus/speaker, --labels model/manifest, notebook 06's table
``eda`` ``plots`` ``report`` ``pipeline`` ``__main__``   analysis figures, provenance, papermill runner, CLI
"""

__version__ = "0.1.0"
