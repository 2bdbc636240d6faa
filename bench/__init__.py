"""Cameron's benchmark suite: runs the real stack on loopback and measures it (`python -m bench`)."""
