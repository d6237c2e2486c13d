"""What the notebooks run: each part of the study, from features and encoders to result files.

``sources``             what a profile's corpus and backbones are: local, downloaded, installed or generated
``eda``                 corpus statistics of notebook 02
``baselines``           handcrafted baselines: validation-only selection, evaluation under the protocols, refits
``importance``          fold models refit, permutation importance of feature families
``normalized_systems``  baselines with speaker normalization, the enrolment curve, the deployable one
``systems``             the study's recipes and backbones, the frozen systems, Whisper's input comparison
``finetuning``          the fine-tuned systems: folds trained, reused or resumed; the exported checkpoint
``crosscorpus``         other corpora: adaptation none/corpus/speaker, labels model/manifest, notebook 06's table

May import every layer up to ``results``.
"""
