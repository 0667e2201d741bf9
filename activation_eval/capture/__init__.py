"""Capturing activations during generation: hooks.py (ActivationCapture), continuous.py (continuous batching),
generation.py (prompts -> records)."""
