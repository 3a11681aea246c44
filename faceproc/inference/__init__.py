"""A trained model's folder as one artifact, the open-set ("unknown") maths, and `faceproc predict`."""
