"""How the study scores: the protocols and the metrics, one definition each.

``splits``   the evaluation protocols (random-80-20, actor-kfold = EmoBox folds), saved and reloaded
``metrics``  accuracy, UAR, macro-F1 and the confusion (:func:`~ser_utils.evaluation.metrics.score`, vectorised
             in ``metrics_from_confusion``), result rows, per-clip prediction tables

May import ``core`` and ``data``.
"""
