"""Tools around the pipeline: benchmarks, the seed kernel's reference path, synthetic data."""
