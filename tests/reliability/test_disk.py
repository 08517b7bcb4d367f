"""A full and a read-only data directory: `finerank serve` runs on a small tmpfs that the test
fills, frees, makes read-only in parts (bind mounts) and whole (a remount). Uploads and fine-tunes
fail with a message that names the cause (507 when full, 503 when read-only; a job FAILED with the
OS's reason), nothing is left half-written, rerank keeps answering throughout, and once space
comes back the same server takes uploads and trains again without a restart. On a read-only
directory the server does not start, and says why.

Needs root for mount(8). Where mounting is not permitted (an unprivileged container), the
read-only part falls back to `chattr +i` on the upload and staging directories, and the checks
that need a tmpfs are skipped, each on a `SKIP` line that the run's totals count.

Usage: test_disk.py BINARY WORK_DIR
"""
import errno
import os
import subprocess
import sys

from harness import Checks
from common import Api, integrity_check, rows, tiny_server

# Room for the tiny model (about 5 MB) and a fine-tune of it: its model, and the resume state it
# saves at each validation (the weights, the kept checkpoint's and AdamW's two moments, about four
# times the model, twice over while a save replaces the previous one).
SIZE_MB = 64


def sh(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def fill(path, leave=0):
    """Writes `path` until the file system has no more than `leave` bytes free."""
    with open(path, "ab") as f:
        chunk = b"\0" * (1 << 20)
        while True:
            free = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
            if free <= leave:
                return
            try:
                f.write(chunk[:max(4096, min(len(chunk), free - leave))])
                f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                return


def staged_bytes(data_dir):
    total = 0
    for folder in ("staging", "uploads"):
        for dirpath, _, files in os.walk(os.path.join(data_dir, folder)):
            if folder == "uploads" and not os.path.basename(dirpath).startswith(".staging-"):
                continue
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def expect_refused(status, body, code, words):
    print(f"     disk: {status} {body.get('message') if isinstance(body, dict) else body}")
    assert status == code, (status, body)
    message = body["message"].lower()
    assert any(w in message for w in words), body


# What only a tmpfs of its own can show: skipped, and counted, where mount(8) is not permitted.
NEEDS_MOUNT = (
    "a full disk: an upload is refused with 507 and leaves nothing",
    "a full disk: rerank, reads and the metrics still answer",
    "a full disk: a new fine-tune is refused with 507, or fails with the reason",
    "room for the job's records but not its model: FAILED with the reason, nothing left",
    "space is back: the same server takes an upload and trains to READY",
    "a read-only data dir at start: the server exits with the cause, no panic",
    "writable again: the server starts with everything intact",
    "a full disk at start: the server exits with the cause, no panic",
)
READ_ONLY_PARTS = "uploads and model staging read-only: 503 and a FAILED job, with the reason"

FULL = ("full", "no space")
READ_ONLY = ("read-only",)


def refuses_to_start(binary, data_dir, log, cause):
    """The server exits at start on an unwritable data dir, naming the OS's `cause`, without a panic."""
    try:
        tiny_server(binary, data_dir, log).start(timeout=60)
        raise AssertionError(f"the server started on a data dir that gives {cause!r}")
    except RuntimeError as e:
        assert "exited" in str(e), e
    text = open(log).read()
    assert "not writable" in text and cause in text and "panicked" not in text, text


def full_disk(checks, binary, work, mnt):
    data_dir, log = os.path.join(mnt, "data"), os.path.join(work, "disk.log")
    server = tiny_server(binary, data_dir, log).start()
    api = Api(server)
    status, created = api.upload(rows(16), rows(8, "deed"))
    assert status == 200, created
    dataset_id = api.settled_dataset(created["id"])["id"]
    status, job = api.finetune(dataset_id)
    ready_id = api.settled_model(job["finetuned_model"]["id"])["id"]
    filler = os.path.join(mnt, "filler")

    with checks.check(f"a full disk ({SIZE_MB} MB tmpfs): an upload is refused with 507 and leaves nothing"):
        fill(filler)
        for size in (50, 3000):
            status, body = api.upload(rows(size))
            expect_refused(status, body, 507, FULL)
        assert staged_bytes(data_dir) == 0, "a refused upload left bytes behind"

    with checks.check("a full disk: rerank, reads and the metrics still answer"):
        for model in (None, ready_id + "-ft"):
            status, body = api.rerank(model=model)
            assert status == 200, body
        assert api.get("/v1/datasets")[0] == 200 and api.get("/v1/finetuning/finetuned-models")[0] == 200
        assert api.get("/metrics")[0] == 200

    with checks.check("a full disk: a new fine-tune is refused with 507, or fails with the reason; never stuck"):
        status, body = api.finetune(dataset_id)
        if status == 200:
            m = api.settled_model(body["finetuned_model"]["id"])
            print(f"     disk: the job {m['status']}: {m.get('failure_reason')}")
            assert m["status"] == "STATUS_FAILED" and "space" in m["failure_reason"].lower(), m
        else:
            expect_refused(status, body, 507, FULL)

    with checks.check("room for the job's records but not its model: FAILED with the reason, nothing left"):
        os.remove(filler)
        fill(filler, leave=1 << 20)  # a model of the tiny checkpoint takes about 5 MB
        status, body = api.finetune(dataset_id)
        assert status == 200, body
        m = api.settled_model(body["finetuned_model"]["id"])
        print(f"     disk: the job {m['status']}: {m.get('failure_reason')}")
        assert m["status"] == "STATUS_FAILED", m
        assert "no space left on device" in m["failure_reason"].lower(), m
        assert staged_bytes(data_dir) == 0, "the failed model's files are still in staging"
        assert api.rerank(model=ready_id + "-ft")[0] == 200

    with checks.check("space is back: the same server takes an upload and trains to READY"):
        os.remove(filler)
        status, created = api.upload(rows(16), rows(8, "deed"))
        assert status == 200, created
        assert api.settled_dataset(created["id"])["validation_status"] == "validated"
        status, body = api.finetune(created["id"])
        assert api.settled_model(body["finetuned_model"]["id"])["status"] == "STATUS_READY"
        assert integrity_check(data_dir) == ["ok"]
    return server, api, dataset_id, ready_id


def read_only_parts(checks, server, api, data_dir, dataset_id, ready_id, protect, release, how):
    with checks.check(f"uploads and model staging read-only ({how}): 503 and a FAILED job, with the reason"):
        for folder in ("uploads", "staging"):
            protect(os.path.join(data_dir, folder))
        try:
            status, body = api.upload(rows(16))
            expect_refused(status, body, 503, READ_ONLY)
            status, body = api.finetune(dataset_id)
            assert status == 200, body
            m = api.settled_model(body["finetuned_model"]["id"])
            print(f"     disk: the job {m['status']}: {m.get('failure_reason')}")
            assert m["status"] == "STATUS_FAILED", m
            reason = m["failure_reason"].lower()
            assert "read-only" in reason or "permission" in reason or "not permitted" in reason, m
            for model in (None, ready_id + "-ft"):
                assert api.rerank(model=model)[0] == 200
        finally:
            for folder in ("uploads", "staging"):
                release(os.path.join(data_dir, folder))
        status, body = api.upload(rows(16))
        assert status == 200, body


def main(binary, work):
    checks = Checks("disk")
    mnt = os.path.join(work, "disk")
    os.makedirs(mnt, exist_ok=True)
    mount = sh("mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", mnt)
    if mount.returncode != 0:
        checks.skip(NEEDS_MOUNT, f"mount is not permitted here: {mount.stderr.strip()}")
        data_dir = os.path.join(mnt, "data")
        server = tiny_server(binary, data_dir, os.path.join(work, "disk.log")).start()
        api = Api(server)
        status, created = api.upload(rows(16), rows(8, "deed"))
        dataset_id = api.settled_dataset(created["id"])["id"]
        ready_id = api.settled_model(api.finetune(dataset_id)[1]["finetuned_model"]["id"])["id"]
        if sh("chattr", "+i", os.path.join(data_dir, "uploads")).returncode != 0:
            checks.skip([READ_ONLY_PARTS], "neither mount nor chattr +i is permitted here")
        else:
            sh("chattr", "-i", os.path.join(data_dir, "uploads"))
            read_only_parts(checks, server, api, data_dir, dataset_id, ready_id,
                            lambda d: sh("chattr", "+i", d), lambda d: sh("chattr", "-i", d), "chattr +i")
        server.stop()
        checks.finish()

    try:
        server, api, dataset_id, ready_id = full_disk(checks, binary, work, mnt)
        data_dir = os.path.join(mnt, "data")

        def protect(d):
            assert sh("mount", "--bind", d, d).returncode == 0
            assert sh("mount", "-o", "remount,bind,ro", d).returncode == 0

        read_only_parts(checks, server, api, data_dir, dataset_id, ready_id, protect,
                        lambda d: sh("umount", d), "read-only bind mounts")

        with checks.check("a read-only data dir at start: the server exits with the cause, no panic"):
            assert server.stop() == 0
            remount = sh("mount", "-o", "remount,ro", mnt)
            assert remount.returncode == 0, remount.stderr
            refuses_to_start(binary, data_dir, os.path.join(work, "disk-ro.log"), "Read-only file system")

        with checks.check("writable again: the server starts with everything intact"):
            assert sh("mount", "-o", "remount,rw", mnt).returncode == 0
            server = tiny_server(binary, data_dir, os.path.join(work, "disk.log")).start()
            api = Api(server)
            assert integrity_check(data_dir) == ["ok"]
            assert api.dataset(dataset_id)["validation_status"] == "validated"
            assert api.rerank(model=ready_id + "-ft")[0] == 200

        with checks.check("a full disk at start: the server exits with the cause, no panic"):
            assert server.stop() == 0
            fill(os.path.join(mnt, "filler"))
            refuses_to_start(binary, data_dir, os.path.join(work, "disk-full-start.log"), "No space left on device")
    finally:
        for d in ("uploads", "staging"):
            sh("umount", os.path.join(mnt, "data", d))
        sh("umount", "-l", mnt)
    checks.finish()


if __name__ == "__main__":
    main(*sys.argv[1:3])
