"""Unlearning methods, data, models, evaluation and the training engine."""
