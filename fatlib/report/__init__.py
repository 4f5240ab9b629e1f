"""Pictures: figures (spectrograms, curves, Grad-CAM...), the run report, dataset previews."""
