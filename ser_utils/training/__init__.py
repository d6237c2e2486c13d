"""What trains models: batches, the fine-tuning loop, the frozen-embedding cache and its heads.

``batches``     clips with random training crops, length-grouped batches, collation
``loop``        the fine-tuning loop (accelerate) and a fold folder's layout
``embeddings``  the frozen-embedding cache (one encoder pass per clip for the frozen heads and partial fine-tuning)
``frozen_heads`` heads on frozen embeddings (SGD or closed form), candidates chosen on validation, the probe
``partial``     partial fine-tuning from cached lower-layer states

May import every layer up to ``models``.
"""
