"""Self-training stage: a K-fold teacher relabels the noisy split and a K-fold student trains on
the curated clips and the relabelled noisy ones (FAT2019's winners' use of noisy data); it drives
the training and inference stages, as tune drives training."""
