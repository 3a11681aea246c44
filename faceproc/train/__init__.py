"""Stage 2, `faceproc train`: the face shards to trained models under OUT/models/<name>/ (Ray Train)."""
