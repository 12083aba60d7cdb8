#!/usr/bin/env bash
# Starts the local PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) that the backend tests
# use, when they are installed but not running (the commands this machine kind documents).
# Idempotent; prints what it did on stderr; never fails the caller (the tests decide whether a
# missing service is an error: KEEL_REQUIRE_SERVICES=1).
set -uo pipefail

if command -v redis-cli >/dev/null && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  if command -v redis-server >/dev/null; then
    echo "start-services: starting Redis on 127.0.0.1:6379" >&2
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log >&2 || true
  fi
fi

if command -v pg_isready >/dev/null && ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "start-services: starting PostgreSQL on 127.0.0.1:5432" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start >&2 || true
  fi
fi

for _ in $(seq 50); do
  redis_ok=1; pg_ok=1
  command -v redis-cli >/dev/null && { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || redis_ok=0; }
  command -v pg_isready >/dev/null && { pg_isready -h 127.0.0.1 -p 5432 -q || pg_ok=0; }
  [ "$redis_ok" = 1 ] && [ "$pg_ok" = 1 ] && break
  sleep 0.2
done
exit 0
