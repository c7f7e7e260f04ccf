"""Bulk edits: a manifest of images and prompts, edited as a streaming Ray Data pipeline, resumable, with a report.

`manifest` (the streaming scan of JSONL / CSV / Parquet manifests, PosEdit),
`storage` (paths and object-store URLs), `stages` (the pipeline's stages),
`run` (the plan, resume, the driver), `report` (summary, HTML), `command`
(`f2f bulk` and `python -m f2f.bulk`, the Ray job entry point). Importing
this package imports no Ray.
"""
