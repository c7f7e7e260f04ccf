"""The Serve deployments, each computing its own options: `ingress` (the FastAPI app, with `ingress_args`), `worker`
(the edit worker, a task consumer of the job queue), `vlm`, `generator` (with `ranks` for a split generator), the
model protocols over their handles (`remote`), the application's arguments (`args`) and a Serve config file as
`f2f serve` reads it (`serve_file`). The builder that Serve config files name is `f2f.serving.app`."""
