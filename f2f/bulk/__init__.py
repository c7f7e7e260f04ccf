"""Bulk edits: a manifest of images and prompts, edited on Ray actor pools, resumable, with a report.

`manifest` (reading and validating JSONL / CSV manifests, PosEdit), `runner`
(Ray actors, the resumable run), `report` (index, summary, HTML), `command`
(`f2f bulk` and `python -m f2f.bulk`, the Ray job entry point). Importing
this package imports no Ray.
"""
