"""Edit quality: `f2f eval` (LPIPS, CLIP and a pose metric over a benchmark's edits).

Light to import: torch, ai-edge-litert and transformers are imported by the
metric modules (`lpips`, `pose`, `clip`) only when a metric is computed.
"""
