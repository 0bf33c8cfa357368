#!/usr/bin/env bash
# Start a test S3 server (moto_server from PyPI, which answers conditional writes as S3 does:
# `If-None-Match: *` -> 412) on 127.0.0.1, with one bucket, for the S3 cache tests. `.ci/run`
# starts it, runs the tests with REQUIRE_S3=1 and stops it with s3-down.sh.
#
#   STATE=/tmp/s3 ./s3-up.sh     # venv in $S3_VENV (default $STATE/venv), pid in $STATE/s3.pid
# Then: S3_TEST_ENDPOINT=http://127.0.0.1:$S3_PORT S3_TEST_BUCKET=$S3_BUCKET cargo test
set -euo pipefail

STATE=${STATE:-/tmp/s3-test}
S3_PORT=${S3_PORT:-9000}
S3_BUCKET=${S3_BUCKET:-cache-test}
S3_VENV=${S3_VENV:-$STATE/venv}
MOTO=${MOTO_VERSION:-5.2.5}
mkdir -p "$STATE"
T0=$EPOCHREALTIME
log() { printf '[s3-up %6.1fs] %s\n' "$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN{print b-a}')" "$*"; }

if [ -s "$STATE/s3.pid" ] && kill -0 "$(cat "$STATE/s3.pid")" 2>/dev/null; then
  echo "already running (pid $(cat "$STATE/s3.pid")); run s3-down.sh first" >&2; exit 1
fi
if [ ! -x "$S3_VENV/bin/moto_server" ]; then
  log "installing moto[server]==$MOTO into $S3_VENV"
  python3 -m venv "$S3_VENV"
  "$S3_VENV/bin/pip" install -q "moto[server]==$MOTO"
fi
# Refuse a port someone else serves: the tests would talk to that server.
if (exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null; then
  echo "port $S3_PORT is in use; set S3_PORT" >&2; exit 1
fi
"$S3_VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$STATE/moto.log" 2>&1 &
echo $! >"$STATE/s3.pid"
for _ in $(seq 100); do
  if curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/"; then break; fi
  sleep 0.1
done
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "http://127.0.0.1:$S3_PORT/$S3_BUCKET")
[ "$code" = 200 ] || { echo "creating bucket $S3_BUCKET: HTTP $code" >&2; cat "$STATE/moto.log" >&2; exit 1; }
log "moto_server pid $(cat "$STATE/s3.pid") on http://127.0.0.1:$S3_PORT, bucket $S3_BUCKET"
