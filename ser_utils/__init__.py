"""Speech emotion recognition on RAVDESS: corpus, protocols, features, pretrained encoders and scoring.

The notebooks in ``notebooks/`` tell the story; this package does the work. Modules, lower rooms first
(a module imports only from rooms above it in this list, never back up):

``names``        system names and what they say (prefixes, kinds, notes, model folders, normalization names)
``config``       profiles (full / smoke) and their run sizes, protocol names, the results-folder layout, paths,
                 environment overrides, the setting error
``progress``     progress bars, switched off in headless runs;  ``device``  precision and batch size
``atomic``       every output file written whole or not at all (temp file, fsync, rename)
``interrupts``   Ctrl-C / SIGTERM stop a run between files;  ``console``  the CLI's stdout and stderr lines
``audio``        the one audio loader (float32 mono 16 kHz, read in blocks) and waveform helpers (crop,
                 normalize, batch, silence, level)
``scan``         which files are audio (every format soundfile reads), folder walks of any depth
``cache``        content-keyed on-disk cache with a parallel, resumable map
``corpus``       RAVDESS file-name grammar, discovery, validation, download, the quick subset
``splits``       the evaluation protocols (random-80-20, actor-kfold = EmoBox folds)
``fingerprint``  digests of code and corpus listings (what caches and the pipeline key on)
``evaluate``     the one scoring function, and the one writer of each result file
``synthetic``    generated corpora: RAVDESS-named, and a shifted second one (smoke profile, tests)
``features/``    handcrafted features: ``base``, ``mfcc_set`` (one-STFT librosa families), ``egemaps``,
                 ``extraction`` (feature tables of a corpus)
``normalization``  speaker normalization of features (per-speaker statistics, no labels), prediction-time
                 adaptation
``backbones/``   pretrained encoders behind one interface (waves in; every layer's states and a frame mask
                 out): ``base``, ``ssl`` (wav2vec2, HuBERT, WavLM, data2vec-audio), ``whisper``, ``ctranslate2``
                 (faster-whisper files), ``resolve`` (folder, installed weight package, hub), ``loading``
``checkpoints``  tiny random checkpoints laid out as hub repositories (smoke profile, tests)
``model``        emotion classifier on any encoder (pooling, layer weighting, freezing; padding-invariant)
``sources``      what a profile's corpus and backbones are: local, downloaded, installed or generated (smoke)
``baselines``    scikit-learn classifiers, validation-only selection, evaluation under the protocols
``importance``   fold models refit, permutation importance of feature families
``baseline_model``  the deployable baseline pipeline (save_pretrained / from_pretrained)
``batches``      clips with random training crops, length-grouped batches, collation
``train``        the fine-tuning loop (accelerate) and a fold folder's layout
``embeddings``   frozen-embedding cache and heads, with or without speaker normalization
``frozen_model`` the deployable frozen encoder + head (save_pretrained / from_pretrained)
``normalized_systems``  baselines with speaker normalization, the enrolment curve, the deployable one
``systems``      the study's recipes and backbones, the frozen systems, Whisper's input comparison
``finetuning``   the fine-tuned systems: folds trained, reused or resumed; the exported checkpoint
``results``      tables across systems: comparison, bootstrap intervals, best system, errors, significance
``compare``      do two results folders agree within their bootstrap intervals (``compare-results``)
``predict``      EmotionRecognizer over any deployable model: windows, batches, groups; load once, predict many
``prediction_io``  audio files of folders, manifests, output checks, per-file lines, CSV and strict JSON
``crosscorpus``  other corpora: adaptation none/corpus/speaker, labels model/manifest, notebook 06's table
``eda`` ``plots`` ``report`` ``pipeline`` ``__main__``   analysis figures, provenance, papermill runner, CLI
"""

__version__ = "0.1.0"
