"""The Ray Serve application of f2f: an OpenAI Images-compatible HTTP API over the edit pipeline.

Layout (one concern per file): `app` (the typed builder that Serve config
files point at), `vlm_deployment` and `generator_deployment` (the two model
deployments, plain classes), `ingress` (the FastAPI routes; runs
`f2f.pipeline.edit` against the two deployments), `protocol` (wire types) and
`errors` (the one exception -> HTTP mapping) and `metrics` (every metric of
the service). Importing `f2f` never imports
this package, nor Ray.
"""
