"""Experiments built from many training runs: ablations of the seed's claims (`ablate`) and
hyperparameter tuning (`tune`). Each writes an experiment folder that resumes where it stopped."""
