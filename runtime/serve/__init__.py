"""Online two-party serving of a model version (``python -m runtime serve``); see docs/serving.md."""
