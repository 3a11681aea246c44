"""Stage 1, `faceproc preprocess`: photos to Parquet face shards, rejects and the manifest."""
