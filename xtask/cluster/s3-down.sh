#!/usr/bin/env bash
# Stop the test S3 server that s3-up.sh started (exactly the pid it recorded).
set -uo pipefail
STATE=${STATE:-/tmp/s3-test}
[ -s "$STATE/s3.pid" ] || { echo "no S3 test server recorded in $STATE/s3.pid"; exit 0; }
p=$(cat "$STATE/s3.pid")
if kill -0 "$p" 2>/dev/null; then
  echo "stopping pid $p (moto_server)"
  kill -TERM "$p"
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && kill -KILL "$p"
fi
rm -f "$STATE/s3.pid"
