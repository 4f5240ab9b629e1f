"""Inference stage: score clips with model artifacts and TTA as a Ray Data batch job."""
