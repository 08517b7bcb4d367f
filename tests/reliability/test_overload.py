"""Overload, slow clients and clients that go away, on localhost against the default model:

- capacity: requests a second with 8 clients back to back;
- a soak at twice that, open loop (requests leave on schedule whether or not earlier ones were
  answered), 45 s (10 minutes with RELIABILITY_LONG=1): every answer is 200 or a quick 429, the
  accepted ones succeed in bounded time, the server's memory stays bounded, and once the load
  stops latency comes back to where it was;
- slowloris: hundreds of connections sending their headers (or bodies) a byte at a time do not
  keep rerank from answering;
- clients that disconnect while queued behind a long request: their requests leave the queue
  unscored (finerank_rerank_cancelled_total), and the queue drains to 0.

The queue is made small (--queue-capacity 16) so that a short soak fills it.

Usage: test_overload.py BINARY WORK_DIR
"""
import json
import os
import socket
import statistics
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import requests

from harness import Checks, Server
from common import KEY, LONG, Api

QUEUE = 16
WORDS = "the lessee shall pay the rent on the first day of each month to the lessor at the address".split()
SOAK_SECONDS = 600 if LONG else 45


def request_body(i):
    docs = [" ".join(WORDS[(i + j + k) % len(WORDS)] for k in range(40)) for j in range(10)]
    return {"query": f"when is the rent due, case {i}", "documents": docs}


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


class Load:
    """Open-loop load: request i leaves at start + i / rate, from a pool of threads."""

    def __init__(self, url, rate, seconds):
        self.url, self.rate, self.seconds = url, rate, seconds
        self.results = []  # (status or exception name, latency from the scheduled time)
        self.local = threading.local()
        self.lock = threading.Lock()

    def one(self, i, due):
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        try:
            r = self.local.session.post(self.url + "/v1/rerank", json=request_body(i),
                                        headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
            outcome = r.status_code
            if outcome == 200:
                assert len(r.json()["results"]) == 10
        except Exception as e:  # noqa: BLE001 - counted and reported
            outcome = type(e).__name__
        with self.lock:
            self.results.append((outcome, time.time() - due))

    def run(self):
        start = time.time()
        n = int(self.rate * self.seconds)
        with ThreadPoolExecutor(max_workers=96) as pool:
            for i in range(n):
                due = start + i / self.rate
                time.sleep(max(0.0, due - time.time()))
                pool.submit(self.one, i, due)
        return self.results


def closed_loop(url, clients, seconds):
    """Requests a second with `clients` clients sending back to back."""
    done = []
    stop = time.time() + seconds

    def client(c):
        s = requests.Session()
        i = c * 10_000
        while time.time() < stop:
            r = s.post(url + "/v1/rerank", json=request_body(i), headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
            assert r.status_code == 200, r.text
            done.append(time.time())
            i += 1
    started = time.time()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return len(done) / (time.time() - started)


def latency(api, n=5):
    times = []
    for i in range(n):
        t = time.time()
        status, body = api.post("/v1/rerank", request_body(i))
        assert status == 200, body
        times.append(time.time() - t)
    return statistics.median(times)


class Rss:
    """Samples the server's resident memory every half second."""

    def __init__(self, server):
        self.server, self.samples, self.running = server, [], True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self):
        while self.running:
            self.samples.append((time.time(), self.server.rss_bytes()))
            time.sleep(0.5)

    def stop(self):
        self.running = False
        self.thread.join()
        return self.samples


def slow_connections(url, n, seconds, request_head):
    """`n` connections each sending `request_head` one byte per round, for `seconds`."""
    host = urllib.parse.urlsplit(url)
    socks = []
    for _ in range(n):
        s = socket.create_connection((host.hostname, host.port), timeout=5)
        socks.append(s)
    sent, alive = 0, n
    deadline = time.time() + seconds
    while time.time() < deadline and sent < len(request_head):
        for s in socks:
            try:
                s.send(request_head[sent:sent + 1])
            except OSError:
                alive -= 1
        sent += 1
        time.sleep(0.1)
    return socks, alive


MB = 1 << 20


def main(binary, work):
    checks = Checks("overload")
    server = Server(binary, os.path.join(work, "overload-data"), os.path.join(work, "overload.log"),
                    flags=["--api-key", KEY, "--queue-capacity", str(QUEUE)]).start()
    api = Api(server)
    host = urllib.parse.urlsplit(server.url)
    latency(api, 3)  # warm up
    baseline = latency(api)
    capacity = closed_loop(server.url, 8, 10)
    rate = 2 * capacity
    warm_rss = server.rss_bytes()
    print(f"     overload: capacity {capacity:.1f} requests/s (8 clients), idle latency {baseline * 1000:.0f} ms, "
          f"RSS {warm_rss / MB:.0f} MB; soak at {rate:.1f}/s for {SOAK_SECONDS}s")
    rejected_before = api.metric("finerank_rerank_rejected_total")

    rss = Rss(server)
    results = Load(server.url, rate, SOAK_SECONDS).run()
    samples = rss.stop()
    ok = [t for s, t in results if s == 200]
    busy = [t for s, t in results if s == 429]
    other = [(s, t) for s, t in results if s not in (200, 429)]
    print(f"     overload: {len(results)} requests: {len(ok)} answered (p50 {percentile(ok, 50):.2f}s, "
          f"p99 {percentile(ok, 99):.2f}s), {len(busy)} refused with 429 (p50 {percentile(busy, 50) * 1000:.0f} ms, "
          f"p99 {percentile(busy, 99) * 1000:.0f} ms), {len(other)} other")
    peak = max(r for _, r in samples)
    print(f"     overload: RSS {warm_rss / MB:.0f} MB before, {peak / MB:.0f} MB at most during the soak")

    with checks.check(f"a soak at 2x capacity: only 200 and 429 ({len(results)} requests), each 200 a full answer"):
        assert not other, other[:20]
        assert len(ok) >= capacity * SOAK_SECONDS * 0.5, "fewer answered than half the capacity"
    with checks.check("excess requests get 429, quickly"):
        assert busy, "the queue never filled"
        assert percentile(busy, 99) < 1.0, percentile(busy, 99)
        assert api.metric("finerank_rerank_rejected_total") - rejected_before == len(busy)
    with checks.check("accepted requests wait at most about a full queue's worth"):
        # A full queue is QUEUE requests at `capacity` a second, plus the batch in hand.
        assert percentile(ok, 99) < 3 * (QUEUE / capacity) + 5, percentile(ok, 99)
    with checks.check("memory stays bounded: RSS peak within 512 MB of the warm server, and not growing"):
        # The peak is the largest batch's activations, which --max-batch-tokens bounds; the queue
        # adds almost nothing (QUEUE requests of a few KB).
        assert peak < warm_rss + 512 * MB, (warm_rss / MB, peak / MB)
        third = len(samples) // 3
        middle, last = max(r for _, r in samples[third:2 * third]), max(r for _, r in samples[2 * third:])
        assert last < middle + 64 * MB, ("still growing", middle / MB, last / MB)
    with checks.check("once the load stops, the queue drains and latency recovers"):
        deadline = time.time() + 60
        while api.metric("finerank_rerank_queue_depth") > 0:
            assert time.time() < deadline, "the queue never drained"
            time.sleep(0.2)
        # A few tries: other jobs share this machine's two cores, and one slow second is noise.
        for _ in range(4):
            after = latency(api)
            if after < 2 * baseline + 0.5:
                break
        print(f"     overload: latency after the soak {after * 1000:.0f} ms (before {baseline * 1000:.0f} ms)")
        assert after < 2 * baseline + 0.5, (baseline, after)

    head = (f"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nX-Slow: " + "x" * 200 + "\r\n\r\n").encode()
    with checks.check("slowloris: 500 connections sending headers a byte at a time; rerank still answers"):
        holder = {}
        t = threading.Thread(target=lambda: holder.update(r=slow_connections(server.url, 500, 8, head)))
        t.start()
        time.sleep(2)
        during = latency(api)
        t.join()
        socks, alive = holder["r"]
        print(f"     overload: with {alive} slow connections open, latency {during * 1000:.0f} ms")
        # Bounds with room for the other jobs sharing this machine's two cores: what matters is
        # that rerank answers at all, where a server with a thread per connection would not.
        assert during < 3 * baseline + 1.0, (baseline, during)
        for s in socks:
            s.close()
    with checks.check("slow bodies: 200 connections trickling a rerank body; rerank still answers"):
        body = json.dumps(request_body(0)).encode()
        slow_head = (f"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        socks = []
        for _ in range(200):
            s = socket.create_connection((host.hostname, host.port), timeout=5)
            s.sendall(slow_head + body[:10])
            socks.append(s)
        during = latency(api)
        for i in range(20):
            for s in socks:
                s.send(body[10 + i:11 + i])
        during = max(during, latency(api))
        print(f"     overload: with 200 slow bodies, latency {during * 1000:.0f} ms")
        assert during < 3 * baseline + 1.0, (baseline, during)
        assert api.metric("finerank_rerank_queue_depth") == 0
        for s in socks:
            s.close()

    def send(body):
        data = json.dumps(body).encode()
        s = socket.create_connection((host.hostname, host.port), timeout=120)
        s.sendall((f"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data)
        return s

    with checks.check("clients that go away while queued: their requests leave the queue unscored"):
        cancelled = api.metric("finerank_rerank_cancelled_total")
        scored = api.metric("finerank_rerank_batch_requests_sum")
        # A request of 200 documents keeps the model busy for seconds, so that the ones after it
        # are surely still queued when their clients go.
        heavy = request_body(0)
        heavy["documents"] = heavy["documents"] * 20
        busy = send(heavy)
        time.sleep(0.3)
        n = QUEUE
        socks = [send(request_body(i)) for i in range(n)]
        time.sleep(0.3)
        for s in socks:
            s.close()
        deadline = time.time() + 30
        while api.metric("finerank_rerank_queue_depth") > 0:
            assert time.time() < deadline, "the queue never drained"
            time.sleep(0.1)
        answer = busy.recv(64)
        busy.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer
        gone = api.metric("finerank_rerank_cancelled_total") - cancelled
        done = api.metric("finerank_rerank_batch_requests_sum") - scored - 1  # less the heavy one
        print(f"     overload: of {n} abandoned requests, {gone:.0f} left the queue unscored, {done:.0f} were scored")
        assert gone == n and done == 0, (gone, done)
        assert latency(api) < 2 * baseline + 0.5

    with checks.check("the server stops cleanly after all that"):
        assert server.stop() == 0
    checks.finish()


if __name__ == "__main__":
    main(*sys.argv[1:3])
