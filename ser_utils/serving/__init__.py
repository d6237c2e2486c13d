"""Using a trained model on audio: the recognizer and its inputs and outputs.

``predict``        :class:`EmotionRecognizer` over any deployable model: windows, batches, groups
``windows``        the scoring windows of a waveform, and the same windows cut from a file while it is decoded
``prediction_io``  audio files of folders, manifests and adaptation groups, output checks, CSV and strict JSON

May import every layer up to ``training`` (in practice ``models`` and below).
"""
