"""The Ray Serve application of f2f: jobs, an HTTP API and an OpenAI Images-compatible route over the pipeline.

Layout (one concern per file, as vLLM's OpenAI entrypoints split theirs):

- `app` (the typed builder that Serve config files point at) and `args` (its
  arguments); the deployments, each computing its own options:
  `vlm_deployment`, `generator_deployment` (with `ranks` for a split
  generator), `worker_deployment`, `events` (job changes pushed to waiting
  requests) and `ingress` (the FastAPI app);
- `protocol` (every wire type), `routers/` (the routes, one router per
  resource: `jobs`, `images`, `health`, `web`, the page's files in `web/`),
  `service` (submit and wait), `outputs` (an image in the format and size
  asked for), `frames` (a job's candidate frames and the caller's choice);
- `jobs` (the job store: every state change of a job, the sweep), `broker`
  (the queue), `auth` (API keys), `remote` (the model protocols over
  handles), `errors` (the one exception -> HTTP mapping), `metrics` and `logs`
  (a job's id on every log line, in every replica).

Importing this package (not its modules) imports no Ray.
"""

# Every Ray process started on one machine for f2f (`f2f serve`, `f2f bulk`) stays on loopback, with no
# token auth and no usage reports; Ray reads these when it starts (environment.md).
RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
