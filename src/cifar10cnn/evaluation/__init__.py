"""Evaluation: test-set metrics of a finished run."""
