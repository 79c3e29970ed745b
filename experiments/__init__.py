"""Experiments: run as modules from the repository root, e.g. ``python -m experiments.retrieval``."""
