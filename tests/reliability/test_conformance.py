"""API conformance: schemathesis generates requests from the server's own /openapi.json (valid
and invalid ones, every operation, then stateful sequences), with API keys on, and checks each
answer: never a 5xx, only documented status codes, the documented content type, headers and body
schema, 401 without a key, 405 for an undocumented method, and that a deleted resource is gone.

Not checked: that every schema-valid request is accepted (the schema cannot say that a dataset id
must name a validated dataset, or that a query must not be blank) and that every schema-invalid
one is refused (unknown JSON fields are ignored, as Cohere's SDK may send fields a server does not
know).

Usage: test_conformance.py BINARY WORK_DIR
"""
import os
import random
import re
import subprocess
import sys

from harness import Checks
from common import KEY, LONG, ROOT, tiny_server

CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_headers_conformance", "response_schema_conformance", "ignored_auth",
    "missing_required_header", "unsupported_method", "use_after_free", "ensure_resource_availability",
])


def main(binary, work):
    checks = Checks("conformance")
    server = tiny_server(binary, os.path.join(work, "conformance-data"), os.path.join(work, "conformance.log")).start()
    # A fixed seed in the short run, so CI repeats; a new one each long run, to look further.
    seed = int(os.environ.get("RELIABILITY_SEED", random.randrange(1 << 30) if LONG else 20261127))
    examples = 1000 if LONG else 40
    out = os.path.join(work, "schemathesis.out")
    with checks.check(f"schemathesis, {examples} examples an operation, seed {seed}: no failure"):
        # One worker: with two, hypothesis parses lambdas' sources from both threads at once, and
        # the venv's CPython 3.11.7 fails that ("AST constructor recursion depth mismatch", a
        # runtime error in schemathesis, not a finding about the server).
        cmd = [os.path.join(ROOT, ".venv", "bin", "schemathesis"), "run", server.url + "/openapi.json",
               "--checks", CHECKS, "--max-examples", str(examples), "--seed", str(seed),
               "--header", f"Authorization: Bearer {KEY}", "--workers", "1", "--request-timeout", "60",
               "--suppress-health-check", "all"]
        with open(out, "w") as f:
            result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=work, timeout=3000)
        text = open(out).read()
        summary = re.search(r"Test cases:\s*\n\s*(\d+) generated(.*)", text)
        print(f"     conformance: {summary.group(1)} requests{summary.group(2)}" if summary else "     no summary")
        if result.returncode != 0:
            print(text[-20000:])
        assert result.returncode == 0, f"schemathesis exited with {result.returncode}; see above"
        assert summary and int(summary.group(1)) > 0, "schemathesis generated nothing"
    with checks.check("the server is still healthy and logged no panic"):
        assert server.stop() == 0
        log = open(os.path.join(work, "conformance.log")).read()
        assert "panicked" not in log, log[-5000:]
    checks.finish()


if __name__ == "__main__":
    main(*sys.argv[1:3])
