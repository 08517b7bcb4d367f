#!/usr/bin/env bash
# Serving replicas (issue 17): rerank requests/s and p50/p99 latency of /v1/rerank with 100
# CaseHOLD holdings a request (bench/rerank-request.sh), at one fixed concurrency, from one
# `finerank serve` alone and from 1, 2 and 4 replicas sharing one PostgreSQL and one file:// store
# behind nginx (round robin, kept-alive upstream connections), as a Kubernetes Service spreads
# them over pods. Every process runs the release build with its default threads. On a machine
# with fewer cores than replicas the total cannot grow; what it shows is that nothing
# serializes across replicas (the total holds) and what the proxy costs (alone vs 1 replica).
# The load comes from wrk, the proxy is Debian's nginx (unpacked into .cache/nginx), and the
# database is scripts/postgres.sh's throwaway PostgreSQL. Each of n replicas scores on
# cores/n libtorch threads (at least one), as pods given their share of a node's CPUs would; a
# replica on all the cores beside others oversubscribes them, which measures the oversubscription.
# Usage: bench/replicas.sh [seconds per run, default 30] [concurrency, default 8]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
cores=$(nproc)
conc=${2:-8}
if [ -z "${FINERANK_TEST_DATABASE_URL:-}" ]; then
  exec scripts/postgres.sh "$0" "$@"
fi
scripts/bootstrap.sh
export PATH=$PWD/.venv/bin:$PATH LIBTORCH_USE_PYTORCH=1
cargo build -q --release -p finerank
bin=$PWD/target/release/finerank

nginx=.cache/nginx/usr/sbin/nginx
if [ ! -x "$nginx" ]; then
  echo "bench: unpacking Debian's nginx into .cache/nginx" >&2
  dl=$(mktemp -d)
  (cd "$dl" && { apt-get download nginx 2>/dev/null || { apt-get update -qq && apt-get download nginx; }; })
  dpkg -x "$dl"/nginx_*.deb .cache/nginx
  rm -rf "$dl"
fi

work=$(mktemp -d)
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT
. bench/rerank-request.sh


# Starts `finerank serve` on a free port, in $port once it is ready. (Not a $(...) subshell: the
# pids must reach stop_all.)
serve() {
  local name=$1 threads=$2; shift 2
  port=$(free_port)
  "$bin" --device cpu --threads "$threads" serve --data-dir "$work/$name" --port "$port" --store "file://$work/store" "$@" \
    >"$work/$name.log" 2>&1 &
  pids+=($!)
  until curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null; do
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$work/$name.log" >&2; exit 1; }
    sleep 0.5
  done
}

# nginx in front of the given ports, on $port.
balance() {
  local upstreams=""
  port=$(free_port)
  for p in "$@"; do upstreams+="server 127.0.0.1:$p;"; done
  mkdir -p "$work/nginx/logs"
  cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  # The request bodies (about 20 kB) stay in memory, where nginx's worker may not write to $work.
  client_body_buffer_size 1m;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  upstream finerank { $upstreams keepalive 64; }
  server {
    listen 127.0.0.1:$port;
    client_max_body_size 16m;
    location / {
      proxy_pass http://finerank;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_read_timeout 120s;
    }
  }
}
CONF
  "$nginx" -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
  pids+=($!)
  until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.2; done
}

measure() {
  local url="http://127.0.0.1:$2/v1/rerank"
  wrk -t1 -c"$conc" -d5s --timeout 120s -s "$work/post.lua" "$url" >/dev/null # warm-up: every replica loads
  wrk_row "$1" "$conc" "$url"
}

printf '| servers | concurrency | requests/s | p50 ms | p99 ms | non-2xx or errors |\n| --- | --- | --- | --- | --- | --- |\n'
# One process on its own: SQLite in its data directory, no proxy.
serve alone "$cores"
measure "1 process, direct, $cores threads" "$port"
stop_all
for n in 1 2 4; do
  ports=()
  threads=$(( cores / n > 0 ? cores / n : 1 ))
  for i in $(seq "$n"); do
    serve "replica-$n-$i" "$threads" --database "$FINERANK_TEST_DATABASE_URL" --training-workers 0
    ports+=("$port")
  done
  balance "${ports[@]}"
  measure "$n replica(s) behind nginx, $threads thread(s) each" "$port"
  stop_all
done
