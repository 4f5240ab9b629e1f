"""LR range test (fastai's lr_find) on the training stage's own batches."""
