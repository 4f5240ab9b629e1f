"""Tuning stage: Ray Tune searches LR / crop / mixup / SpecAugment against validation lwlrap,
each trial being the training stage itself."""
