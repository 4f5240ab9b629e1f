"""The pure core: audio, features, labels, metrics, inputs, augmentations, losses, models.

numpy / torch / soundfile only; never Ray. The same code runs in a Ray task, a training worker
and a notebook. Importing the package imports nothing heavy.
"""
