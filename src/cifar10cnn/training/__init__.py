"""Training: runtime choices, checkpoints, and the training loop."""
