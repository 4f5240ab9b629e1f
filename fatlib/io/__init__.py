"""Where data lives: storage (local or s3://), the Kaggle dataset layout, the Parquet feature
store, model artifacts, predictions and the one clip path (audio file -> log-mel)."""
