"""Cameron: a workflow engine that runs HTTP activities as jobs recorded in Redis."""

__version__ = "0.1.0"
