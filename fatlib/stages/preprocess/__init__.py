"""Preprocessing stage: Kaggle-layout audio -> the Parquet log-mel feature store (Ray Data)."""
