"""What trains models: batches, the fine-tuning loop, the frozen-embedding cache and its heads.

``batches``     clips with random training crops, length-grouped batches, collation
``loop``        the fine-tuning loop (accelerate) and a fold folder's layout
``embeddings``  the frozen-embedding cache, frozen-head training, with or without speaker normalization, the probe

May import every layer up to ``models``.
"""
