"""Capturing activations during generation: hooks.py (ActivationCapture), layers.py (layer names), positions.py
(kept positions), row_capture.py (RowCapture), continuous.py (continuous batching), generation.py (prompts ->
records)."""
