"""Cameron's benchmark suite (issue 5): runs the real stack on loopback and measures it (`python -m bench`)."""
