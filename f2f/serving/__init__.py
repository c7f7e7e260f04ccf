"""The Ray Serve application of f2f: jobs, an HTTP API and an OpenAI Images-compatible route over the pipeline.

Layout (one concern per file): `app` (the typed builder that Serve config
files point at), `vlm_deployment`, `generator_deployment` and
`worker_deployment` (plain classes), `ingress` (the FastAPI routes), `jobs`
(the job store), `broker` (the queue), `auth` (API keys), `remote` (the model
protocols over handles), `protocol` (wire types), `errors` (the one exception
-> HTTP mapping), `metrics`, `frames` (a job's candidate frames and the select
route) and `webpage` (the page at `/`, its files in `web/`). Importing this package (not its modules)
imports no Ray.
"""

# Every Ray process started on one machine for f2f (`f2f serve`, `f2f bulk`) stays on loopback, with no
# token auth and no usage reports; Ray reads these when it starts (environment.md).
RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
