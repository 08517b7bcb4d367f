"""What the schemas cannot check in deploy/kubernetes: that the pieces fit each other and the
server. Every probe and the Prometheus scrape path name a route the server has (its OpenAPI
document is generated from the `#[utoipa::path]` annotations read here); every autoscaler scales
a Deployment of its kustomization; every worker container requests and is limited to a GPU, and
serving pods leave training to the workers. Prints one line a failure; exits 1 if any."""
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy/kubernetes"

routes = set()
for source in (ROOT / "crates/server/src").rglob("*.rs"):
    routes.update(re.findall(r'utoipa::path\([^)]*?path = "([^"]+)"', source.read_text(), re.S))

failures = []


def fail(message):
    # Each overlay applies the base again: say each fault once.
    if message not in failures:
        failures.append(message)
        print(f"FAIL {message}")


def documents(kustomization):
    """Every resource a kustomization applies, with the file it came from."""
    spec = yaml.safe_load(kustomization.read_text())
    for resource in spec.get("resources", []):
        path = kustomization.parent / resource
        if path.is_dir():
            yield from documents(path.resolve() / "kustomization.yaml")
        elif path.exists():
            for doc in yaml.safe_load_all(path.read_text()):
                if doc:
                    yield path.relative_to(ROOT), doc


def containers(doc):
    return doc["spec"]["template"]["spec"]["containers"]


def env(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


for kustomization in sorted(BASE.rglob("kustomization.yaml")):
    docs = list(documents(kustomization))
    where = kustomization.relative_to(ROOT)
    deployments = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Deployment"}
    for path, doc in docs:
        name = f'{path}: {doc["kind"]} {doc["metadata"]["name"]}'
        if doc["kind"] == "HorizontalPodAutoscaler":
            target = doc["spec"]["scaleTargetRef"]
            if target["kind"] != "Deployment" or target["name"] not in deployments:
                fail(f"{name} scales {target['kind']} {target['name']}, which {where} does not have")
        if doc["kind"] != "Deployment":
            continue
        template = doc["spec"]["template"]
        scrape = template["metadata"].get("annotations", {}).get("prometheus.io/path")
        if scrape and scrape not in routes:
            fail(f"{name}: Prometheus scrapes {scrape}, which the server does not serve")
        for c in containers(doc):
            ports = {p["name"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                get = c.get(probe, {}).get("httpGet")
                if get is None:
                    continue
                if get["path"] not in routes:
                    fail(f"{name}: the {probe} asks {get['path']}, which the server does not serve")
                if get["port"] not in ports:
                    fail(f"{name}: the {probe} asks port {get['port']}, which the container does not name")
            if doc["metadata"]["name"] == "finerank-serve":
                if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/health/ready":
                    fail(f"{name}: readiness must be /health/ready (/health is liveness)")
                if env(c).get("FINERANK_TRAINING_WORKERS") != "0":
                    fail(f"{name}: serving replicas must leave training to the workers (FINERANK_TRAINING_WORKERS=0)")
            if doc["metadata"]["name"] == "finerank-worker" and kustomization.parent == BASE:
                resources = c.get("resources", {})
                for kind in ("requests", "limits"):
                    if str(resources.get(kind, {}).get("nvidia.com/gpu")) != "1":
                        fail(f"{name}: the worker {kind} no GPU (nvidia.com/gpu: 1)")
                if c["args"][0] != "worker":
                    fail(f"{name}: runs {c['args']}, not `finerank worker`")
    for wanted in ("finerank-serve", "finerank-worker"):
        if wanted not in deployments:
            fail(f"{where} has no Deployment {wanted}")

print(f"deploy fit: {len(failures)} failed")
sys.exit(1 if failures else 0)
