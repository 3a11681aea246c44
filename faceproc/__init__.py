"""faceproc: a batch face-recognition pipeline on Ray."""

__version__ = "0.1.0"
