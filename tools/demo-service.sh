#!/usr/bin/env bash
# The main job on the embedded default: start the service (serve/local.yaml: tiny profile, CPU, loopback),
# submit one edit of the bundled sample image over HTTP, follow its progress, write the outputs, stop.
# Usage: tools/demo-service.sh OUT_DIR   (F2F_PORT picks the port, default 8000; F2F_METRICS_PORT Ray's metrics
# port, default 8080, 0 lets Ray pick; F2F_BIN the f2f command)
set -euo pipefail
out=${1:?usage: tools/demo-service.sh OUT_DIR}
port=${F2F_PORT:-8000}
f2f=${F2F_BIN:-.venv/bin/f2f}
url="http://127.0.0.1:$port"
log=$(mktemp -t f2f-serve.XXXXXX.log)

"$f2f" serve --port "$port" >"$log" 2>&1 &
server=$!
stop() {
  kill -TERM "$server" 2>/dev/null || true  # f2f serve shuts Serve and Ray down (a background job ignores SIGINT)
  for _ in $(seq 60); do kill -0 "$server" 2>/dev/null || return 0; sleep 1; done
  kill -KILL "$server" 2>/dev/null || true
}
trap stop EXIT

echo "starting f2f serve on $url (log: $log)" >&2
for _ in $(seq 300); do
  if curl -fsS "$url/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then echo "f2f serve exited:" >&2; cat "$log" >&2; exit 1; fi
  sleep 1
done
curl -fsS "$url/readyz" >/dev/null || { echo "f2f serve not ready after 300 s:" >&2; tail -50 "$log" >&2; exit 1; }

"$f2f" submit f2f/data/sample.png "make the sun set behind the hills" --url "$url" --seed 0 --out "$out"
