//! The registry over an S3-compatible store: moto's S3 server (PyPI `moto[server]`), started
//! here on a free port with an empty bucket. Its own test binary, because the store reads its
//! endpoint and credentials from the AWS_* variables, which this sets for the whole process.
//!
//! moto is looked for in `$FINERANK_MOTO_PYTHON`, else in the venv `.cache/moto` at the
//! repository root: `python3 -m venv .cache/moto && .cache/moto/bin/pip install
//! 'moto[server]==5.2.5'`.
mod shared_store;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use shared_store::*;

/// Starts a threaded moto server, creates the bucket, says "ready", and stops when its stdin
/// closes.
const MOTO: &str = r#"
import sys, boto3
from moto.server import ThreadedMotoServer
port = int(sys.argv[1])
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
server.start()
boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
             aws_access_key_id="test", aws_secret_access_key="test").create_bucket(Bucket="finerank")
print("ready", flush=True)
sys.stdin.read()
server.stop()
"#;

/// The moto server, stopped (its stdin closed, then killed) when dropped.
struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto_python() -> PathBuf {
    std::env::var_os("FINERANK_MOTO_PYTHON").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/moto/bin/python"),
        PathBuf::from,
    )
}

fn start_moto(python: &PathBuf, port: u16) -> Moto {
    let mut child = Command::new(python)
        .args(["-c", MOTO, &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting moto");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let moto = Moto(child);
    // moto says what it starts on stdout too; the script's own line comes last.
    let ready = stdout.lines().map_while(Result::ok).any(|l| l == "ready");
    assert!(ready, "moto did not start (its errors are above)");
    moto
}

#[test]
fn the_registry_over_s3_publishes_fetches_verifies_and_deletes() {
    let python = moto_python();
    let has_moto = Command::new(&python)
        .args(["-c", "import moto.server, boto3"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_moto {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: no moto[server] at {} (set FINERANK_MOTO_PYTHON, or see this file's header)",
            python.display()
        );
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _moto = start_moto(&python, port);
    for (key, value) in [
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".to_string()),
    ] {
        std::env::set_var(key, value);
    }
    let url = "s3://finerank/a/prefix";
    published_models_are_shared_and_deleted_everywhere(url);
    a_damaged_file_is_refused_and_nothing_is_cached(url);
    // Nothing is left under the prefix, and nothing was written outside it.
    let store = finerank_engine::FileStore::open("s3://finerank").unwrap();
    assert_eq!(store.list("").unwrap(), Vec::new());
}
