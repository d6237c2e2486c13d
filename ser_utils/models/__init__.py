"""What turns audio into emotion probabilities, and the folders models are saved in.

``heads``       the model config, layer weighting, pooling and MLP head (shared by fine-tuned and frozen models)
``classifier``  :class:`EmotionClassifier`: encoder + head, trained end to end
``frozen``      :class:`FrozenEncoderModel`: frozen encoder + a head on per-layer statistics; ``embed_waves``
``classifiers`` the scikit-learn pipelines of the baselines;  ``baseline``  the deployable baseline model
``folder``      the one writer / reader of an encoder model's folder (``ser_config.json`` + safetensors)
``deployable``  the deployable-model interface;  ``loading``  ``load_deployable`` (dispatch on the format)

May import ``core``, ``data``, ``evaluation``, ``features`` and ``backbones``; knows nothing of training or the study.
"""
