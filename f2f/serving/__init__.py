"""The Ray Serve application of f2f: jobs, an HTTP API and an OpenAI Images-compatible route over the pipeline.

Layout, by concern:

- `app`: the typed builder that Serve config files point at; `scaling` (the
  queue-driven autoscaling policy) and `logs` (the logging setup) are named
  by those files too, and `metrics` is every replica's;
- `api/`: the HTTP API: wire types, routes, the page, submit and wait,
  admission and keys, outputs as asked for, the caller's frame choice, the
  error map;
- `jobs/`: the job record, the stores (a folder, or Redis), the objects (a
  folder, or a bucket), the queue, the sweep, and job-change events;
- `deployments/`: the Serve deployments (ingress, edit worker, VLM,
  generator and its ranks), the model protocols over their handles, the
  application's arguments.

Importing this package (not its modules) imports no Ray.
"""

# Every Ray process started on one machine for f2f (`f2f serve`, `f2f bulk`) stays on loopback, with no
# token auth and no usage reports; Ray reads these when it starts (environment.md).
RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
