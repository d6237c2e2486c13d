"""Speech emotion recognition on RAVDESS: corpus, protocols, features, wav2vec 2.0 and scoring.

The notebooks in ``notebooks/`` tell the story; this package does the work. Modules:

``config``      profiles (full / smoke), paths, environment overrides
``corpus``      RAVDESS file-name grammar, discovery, validation, download
``audio``       the one audio loader (float32 mono 16 kHz) and waveform helpers
``splits``      the evaluation protocols (random-80-20, actor-kfold = EmoBox folds)
``evaluate``    the one scoring function and the tidy result tables
``cache``       content-keyed on-disk cache with a parallel, resumable map
``fingerprint`` digests of code, corpus listings and backbone weights (what caches and the pipeline key on)
``features``    handcrafted features (one-STFT librosa families, eGeMAPS)
``baselines``   scikit-learn baselines, validation-only selection, saved pipelines
``backbones``   SSL backbones by model_type (wav2vec2, HuBERT, WavLM, data2vec-audio), strict loading
``model``       emotion classifier on a backbone (pooling, layer weighting, freezing; padding-invariant)
``train``       fine-tuning loop (accelerate);  ``embeddings``  frozen-embedding cache and heads
``systems``     the wav2vec2 recipes and how each runs under a protocol
``device``      precision and batch size from the hardware
``normalization``  speaker normalisation and enrolment (per-speaker statistics from features alone)
``results``     comparison table, bootstrap intervals, error analysis, significance
``compare``     do two results folders agree within their bootstrap intervals (``compare-results``)
``predict``     EmotionRecognizer, the predict and evaluate commands
``crosscorpus`` other corpora: --adapt none/corpus/speaker, --labels model/manifest, notebook 06's table
``synthetic``   a generated RAVDESS-named corpus, a shifted second corpus and tiny hub-layout checkpoints
                (smoke profile, tests)
``eda`` ``plots`` ``report`` ``pipeline`` ``progress``   analysis figures, provenance, papermill runner
"""

__version__ = "0.1.0"
