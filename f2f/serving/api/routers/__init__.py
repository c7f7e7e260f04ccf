"""The HTTP routes, one router per resource (as vLLM's OpenAI entrypoints split theirs).

- `jobs`: `/v1/edits` and a job's outputs and events.
- `images`: the OpenAI Images API (`/v1/images/edits`) and `/v1/models`.
- `health`: `/healthz` and `/readyz`.
- `web`: the web page at `/` and its two assets.
- `docs`: Swagger UI at `/docs` from this server's own files, only with the app arg `docs`.

Each route takes what it needs through `deps` (the caller's API key, the
`EditService`, the ingress's HTTP args); request bodies are read by `parsing`; the wire types are
`f2f.serving.api.wire`'s.
"""
