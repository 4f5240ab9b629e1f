"""Training stage: a DDP ResNet on the feature store with Ray Train, checkpointed, resumable.

config (settings and result, light), inputs (what the driver derives from the store), datasets
(Ray Data shards), loop (the worker loop and distributed validation), checkpoints (save, restore,
export the model artifact), driver (`train`, which ties them together).
"""
