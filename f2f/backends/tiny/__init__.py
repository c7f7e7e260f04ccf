"""Builders of tiny random-weight checkpoints of the real architectures, for tests and the demo."""
