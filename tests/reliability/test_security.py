"""Security of `finerank serve` with API keys on, from outside the process:

- every operation in /openapi.json but /health answers 401 without a valid key, whatever form the
  wrong key takes, and no path trick reaches the API through the open paths (/health, /docs,
  /openapi.json and the dashboard's files);
- a read-only key gets 403 from every operation that writes, and through every other one;
- ids and names (path parameters, query parameters, JSON fields, multipart file names) that try to
  leave the data directory (`../`, absolute paths, NUL bytes, percent-encoding, fullwidth and
  other look-alike slashes) are refused or kept as display text: no file appears, changes or goes
  away outside the data directory, and every file inside it has a name the server made;
- the body and upload limits answer 413, with and without Content-Length, and leave no file;
- with RUST_LOG=trace, neither the key nor any uploaded or reranked text reaches the log.

The key comparison itself is a unit test in crates/server/src/auth.rs; the dashboard's escaping of
user text is tests/browser (a `<script>` in names and documents).

Usage: test_security.py BINARY WORK_DIR
"""
import base64
import http.client
import json
import os
import re
import sys
import urllib.parse
import uuid

from harness import Checks
from common import KEY, Api, rows, tiny_server, wait_for

# In every uploaded row and reranked text, and never in the log. Its first character occurs
# nowhere else, so that a log which copies text one character at a time is caught too.
RARE = "\ua66e"
MARKER = RARE + "MARK" + uuid.uuid4().hex
WRONG_KEY = "wrong-key-" + uuid.uuid4().hex
READ_ONLY_KEY = "read-only-key-" + uuid.uuid4().hex
BODY_LIMIT, UPLOAD_LIMIT = 100_000, 300_000


def raw(server, method, path, headers=None, body=None):
    """A request with exactly this path, as sent (no client-side normalisation of `..`)."""
    host = urllib.parse.urlsplit(server.url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        data = json.dumps(body).encode() if body is not None else b""
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}.items():
            conn.putheader(k, v)
        conn.endheaders(data)
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def bad_keys():
    return {
        "no header": {},
        "a wrong key": {"Authorization": f"Bearer {WRONG_KEY}"},
        "the key plus a character": {"Authorization": f"Bearer {KEY}x"},
        "the key less its last character": {"Authorization": f"Bearer {KEY[:-1]}"},
        "the key in upper case": {"Authorization": f"Bearer {KEY.upper()}"},
        "an empty bearer": {"Authorization": "Bearer "},
        "the key without a scheme": {"Authorization": KEY},
        "the key as basic auth": {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()},
        "the key in another header": {"X-Api-Key": KEY},
    }


def traversals(work):
    """Strings that try to name something outside the data directory."""
    sentinel = os.path.basename(work.rstrip("/"))
    return [
        "..", "../", "../../../../etc/passwd", "/etc/passwd", "..\\..\\..\\windows\\win.ini",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..%2F..%2Fetc%2Fpasswd", "%252e%252e%252f",
        "\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fetc\uff0fpasswd",  # fullwidth . and /
        "..\u2215..\u2215etc\u2215passwd", "..\u2044..\u2044etc",  # division and fraction slashes
        "\u2025/\u2025/etc", "%c0%ae%c0%ae/%c0%ae%c0%ae/etc",  # two-dot leader, overlong UTF-8
        "\x00", "a\x00../../etc/passwd", "%00", "....//....//etc/passwd", "..;/..;/etc",
        f"../{sentinel}-sentinel.txt", f"../../{sentinel}/sentinel.txt", f"/tmp/{sentinel}-escape",
        f"{uuid.uuid4()}/../../sentinel.txt", f"{uuid.uuid4()}-ft/../../sentinel.txt",
        f"{uuid.uuid4()}\x00", "~", "~root/.ssh", "$HOME", "file:///etc/passwd", "\\\\host\\share", "con", "",
    ]


ALLOWED = [
    r"finerank\.(db(-wal|-shm|-journal)?|lock)",
    r"uploads/[0-9a-f-]{36}/(train|eval)\.jsonl",
    r"models/[0-9a-f-]{36}-ft/[A-Za-z_.]+",
    r"staging/[0-9a-f-]{36}-ft(/.*)?",
]


def tree(root, skip=()):
    out = {}
    for dirpath, _, files in os.walk(root):
        if any(dirpath.startswith(s) for s in skip):
            continue
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


def main(binary, work):
    checks = Checks("security")
    os.makedirs(work, exist_ok=True)
    data_dir, log_path = os.path.join(work, "security-data"), os.path.join(work, "security.log")
    # Files beside the data directory that a traversal would read, overwrite or delete.
    with open(os.path.join(work, "sentinel.txt"), "w") as f:
        f.write("sentinel " + MARKER)
    with open(os.path.join(work, os.path.basename(work.rstrip("/")) + "-sentinel.txt"), "w") as f:
        f.write("sentinel " + MARKER)
    server = tiny_server(binary, data_dir, log_path, "--api-key-read-only", READ_ONLY_KEY,
                         "--max-body-bytes", str(BODY_LIMIT),
                         "--max-upload-bytes", str(UPLOAD_LIMIT), env={"RUST_LOG": "trace"}).start()
    outside_before = tree(work, skip=(data_dir,))
    api = Api(server)
    escape = f"/tmp/{os.path.basename(work.rstrip('/'))}-escape"

    # Real resources, so that lookups reach past "not found" where they can.
    status, created = api.upload(rows(12, marker=MARKER), rows(6, tag="deed", marker=MARKER))
    assert status == 200, created
    dataset_id = api.settled_dataset(created["id"])["id"]
    status, job = api.finetune(dataset_id, name="security")
    assert status == 200, job
    model_id = api.settled_model(job["finetuned_model"]["id"])["id"]

    spec = api.get("/openapi.json")[1]
    operations = [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops]
    with checks.check(f"every operation but /health and /health/ready: 401 without a valid key ({len(operations)} operations "
                      f"x {len(bad_keys())} wrong keys)"):
        wrong = []
        for method, path in operations:
            concrete = re.sub(r"\{[^}]+\}", model_id if "finetuned" in path else dataset_id, path)
            for name, headers in bad_keys().items():
                status, body = raw(server, method, concrete, headers, {} if method in ("POST", "PATCH") else None)
                expected = 200 if path in ("/health", "/health/ready") else 401
                if status != expected:
                    wrong.append((method, concrete, name, status, body[:200]))
            if method != "DELETE":  # the right key gets in (a DELETE would remove the resources)
                status, _ = raw(server, method, concrete, {"Authorization": f"Bearer {KEY}"},
                                {} if method in ("POST", "PATCH") else None)
                if status == 401:
                    wrong.append((method, concrete, "the right key", status))
        assert not wrong, wrong

    with checks.check(f"a read-only key: 403 from every operation that writes, through every other one "
                      f"({len(operations)} operations)"):
        wrong = []
        for method, path in operations:
            concrete = re.sub(r"\{[^}]+\}", model_id if "finetuned" in path else dataset_id, path)
            status, body = raw(server, method, concrete, {"Authorization": f"Bearer {READ_ONLY_KEY}"},
                               {} if method in ("POST", "PATCH") else None)
            writes = method != "GET" and not path.endswith("rerank")
            if (status == 403) != writes or status == 401:
                wrong.append((method, concrete, status, body[:200]))
        assert not wrong, wrong

    tricks = ["/metrics", "/info", "/nowhere", "/assets/../v1/datasets",
              "/assets/%2e%2e/v1/datasets", "/assets/..%2Fv1%2Fdatasets", "/health/../v1/datasets",
              "/health/%2e%2e/v1/datasets", "/health%2F..%2Fv1%2Fdatasets", "//v1/datasets", "/./v1/datasets",
              "/v1/datasets/", "/v1//datasets", "/V1/DATASETS", "/health/", "/%68ealth", "/health;/v1/datasets",
              "/assets/js/../../v1/datasets", "/?/v1/datasets", "/v1/datasets?x=/health", "/v1/datasets#/health"]
    with checks.check(f"no path trick gets past the key ({len(tricks)} paths)"):
        leaked = []
        for path in tricks:
            status, body = raw(server, "GET", path)
            if status == 200 and (dataset_id in body or '"datasets"' in body or "paths" in body):
                leaked.append((path, status, body[:200]))
            elif status not in (400, 401, 404, 405) and not (status == 200 and path in ("/health/", "/?/v1/datasets")):
                leaked.append((path, status, body[:200]))
        assert not leaked, leaked
        # The dashboard's files and the API's description: public, and no data in them.
        for path in ("/", "/assets/js/app.js", "/docs", "/openapi.json"):
            status, body = raw(server, "GET", path)
            assert status == 200 and dataset_id not in body and MARKER not in body, (path, status)

    names = traversals(work)
    path_ops = [("GET", "/v1/datasets/{}"), ("DELETE", "/v1/datasets/{}"),
                ("GET", "/v1/finetuning/finetuned-models/{}"), ("PATCH", "/v1/finetuning/finetuned-models/{}"),
                ("DELETE", "/v1/finetuning/finetuned-models/{}"),
                ("GET", "/v1/finetuning/finetuned-models/{}/events"),
                ("GET", "/v1/finetuning/finetuned-models/{}/training-losses"),
                ("GET", "/v1/finetuning/finetuned-models/{}/training-step-metrics"),
                ("GET", "/v1/models/{}"), ("GET", "/assets/{}")]
    auth = {"Authorization": f"Bearer {KEY}"}
    with checks.check(f"ids that try to leave the data dir, in every path parameter "
                      f"({len(names)} strings x {len(path_ops)} operations x 2 encodings)"):
        wrong = []
        for method, template in path_ops:
            for name in names:
                for encoded in (urllib.parse.quote(name, safe=""), urllib.parse.quote(name, safe="/")):
                    path = template.format(encoded)
                    status, body = raw(server, method, path, auth, {"name": "x"} if method == "PATCH" else None)
                    if status not in (400, 404, 405) or MARKER in body:
                        wrong.append((method, path, status, body[:200]))
        assert not wrong, wrong

    with checks.check(f"names and ids in queries, JSON fields and file names ({len(names)} strings x 9 fields)"):
        wrong = []
        for name in names:
            status, body = api.upload(rows(8), name=name or "x", filename=name or "x")
            if status == 200:
                d = api.settled_dataset(body["id"])
                part = d["dataset_parts"][0]["name"]
                if any(c in part for c in "/\\\x00"):
                    wrong.append(("upload file name shown with a directory", name, part))
                api.call("DELETE", f"/v1/datasets/{body['id']}")
            elif status != 400:
                wrong.append(("upload", name, status, body))
            # A blank model name means the default model, so it may be accepted.
            model_ok = (400, 404, 200) if not name.strip() else (400, 404)
            fields = [
                ("POST", "/v1/rerank", {"model": name, "query": "q", "documents": ["d"]}, model_ok),
                ("POST", "/v2/rerank", {"model": name, "query": "q", "documents": ["d"]}, model_ok),
                ("POST", "/v1/finetuning/finetuned-models",
                 {"name": "x", "settings": {"base_model": {"base_type": "BASE_TYPE_RERANK"}, "dataset_id": name}},
                 (400,)),
                ("POST", "/v1/finetuning/finetuned-models",
                 {"name": "x", "settings": {"base_model": {"base_type": "BASE_TYPE_RERANK", "name": name},
                                            "dataset_id": dataset_id}}, model_ok),
                ("PATCH", f"/v1/finetuning/finetuned-models/{model_id}", {"name": name or "x"}, (200, 400)),
            ]
            for method, path, body_, allowed in fields:
                status, body = api.call(method, path, json=body_)
                if status not in allowed:
                    wrong.append((method, path, name, status, body))
            for query, allowed in (({"dataset_id": name}, (400, 404)),
                                   ({"dataset_id": dataset_id, "base_model": name}, model_ok)):
                status, body = api.get("/v1/finetuning/hyperparameters", params=query)
                if status not in allowed:
                    wrong.append(("hyperparameters", query, status, body))
        assert not wrong, wrong
        # A fine-tune whose name is a traversal is stored under the server's id like any other.
        status, job = api.finetune(dataset_id, name="../../" + os.path.basename(work.rstrip("/")) + "-escape")
        assert status == 200, job
        assert api.settled_model(job["finetuned_model"]["id"])["status"] == "STATUS_READY"

    with checks.check("nothing outside the data dir appeared, changed or went; inside, only the server's names"):
        assert not os.path.exists(escape), escape
        after = tree(work, skip=(data_dir,))
        for name in set(outside_before) | set(after):
            if name.endswith(".log"):
                continue
            assert outside_before.get(name) == after.get(name), f"{name} changed outside the data dir"
        strange = [p for p in tree(data_dir) if not any(re.fullmatch(a, p) for a in ALLOWED)]
        assert not strange, strange
        assert api.rerank(model=model_id + "-ft")[0] == 200

    json_ops = [("POST", "/v1/rerank"), ("POST", "/v2/rerank"), ("POST", "/rerank"),
                ("POST", "/v1/finetuning/finetuned-models"), ("PATCH", f"/v1/finetuning/finetuned-models/{model_id}")]
    with checks.check(f"bodies over --max-body-bytes: 413, with and without Content-Length ({len(json_ops)} x 2)"):
        big = json.dumps({"query": "q", "documents": ["x" * BODY_LIMIT]}).encode()
        for method, path in json_ops:
            for data in (big, iter([big[:50_000], big[50_000:]])):  # an iterator is sent chunked
                status, body = api.call(method, path, data=data, headers={"Content-Type": "application/json"})
                # TEI's /rerank answers in TEI's shape.
                message = body.get("message") or body.get("error")
                assert status == 413 and "--max-body-bytes" in message, (method, path, status, body)

    with checks.check("uploads over --max-upload-bytes: 413 and no file left; just under: accepted"):
        row = len(rows(1, padding=10))
        # Just over: a client still sending when the 413 comes would see the connection closed.
        big = rows(UPLOAD_LIMIT // row + 10, padding=10)
        assert len(big) > UPLOAD_LIMIT
        for data in (big, iter([big])):
            if isinstance(data, bytes):
                status, body = api.upload(data)
            else:
                boundary = uuid.uuid4().hex
                head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"data\"; filename=\"t.jsonl\"\r\n"
                        "Content-Type: application/octet-stream\r\n\r\n").encode()
                body_iter = iter([head, big, f"\r\n--{boundary}--\r\n".encode()])
                status, body = api.call("POST", "/v1/datasets", params={"name": "big", "type": "reranker-finetune-input"},
                                        data=body_iter, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            assert status == 413 and "--max-upload-bytes" in body["message"], (status, body)
        leftovers = [n for n in os.listdir(os.path.join(data_dir, "uploads")) if n.startswith(".")]
        assert not leftovers, leftovers
        under = rows(UPLOAD_LIMIT * 9 // 10 // row, padding=10)
        assert BODY_LIMIT < len(under) < UPLOAD_LIMIT - 1000, len(under)
        status, body = api.upload(under)
        assert status == 200, body

    with checks.check("with RUST_LOG=trace, the log holds neither a key nor any uploaded or reranked text"):
        for docs in (["one " + MARKER, "two"], [MARKER] * 3):
            assert api.rerank(query="find " + MARKER, documents=docs)[0] == 200
        assert Api(server, key=WRONG_KEY).get("/v1/datasets")[0] == 401
        # A dataset that fails validation, whose problems quote its rows.
        dup = json.dumps({"query": MARKER, "relevant_passages": [MARKER], "hard_negatives": [MARKER]}) + "\n"
        status, body = api.upload(dup.encode() * 3)
        assert status == 200, body
        assert wait_for(lambda: api.dataset(body["id"]), lambda d: d["validation_status"] == "failed", 30)
        assert server.stop() == 0
        log = open(log_path, encoding="utf-8", errors="replace").read()
        assert len(log) > 10_000 and "TRACE" in log, "the log is not at trace level"
        for secret in (KEY, WRONG_KEY, READ_ONLY_KEY, RARE, KEY.split("-")[-1]):
            assert secret not in log, f"{secret[:12]}... appears in the log: " + log[log.find(secret) - 300:][:600]
    checks.finish()


if __name__ == "__main__":
    main(*sys.argv[1:3])
