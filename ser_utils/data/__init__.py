"""Audio and corpora: the one audio loader, folder scans, the RAVDESS corpus, generated corpora.

``audio``      the one audio loader (float32 mono 16 kHz, read in blocks) and waveform helpers (crop, normalize,
               batch longest first, silence, level)
``scan``       which files are audio (every format soundfile reads), folder walks of any depth
``corpus``     RAVDESS file-name grammar, discovery, validation, download, the quick subset, the corpus digest
``synthetic``  generated corpora: RAVDESS-named, and a shifted second one (smoke profile, tests)

May import ``core``.
"""
