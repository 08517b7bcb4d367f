//! What the model crate's test files share.
#![allow(dead_code)] // Each test binary uses its own part.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use finerank_model::{DeviceChoice, LoadOptions};
use serde_json::Value;

/// A tiny checkpoint of `tests/families/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/families")
        .join(name)
}

pub fn cpu() -> LoadOptions {
    LoadOptions {
        device: DeviceChoice::Cpu,
        ..LoadOptions::default()
    }
}

/// Runs `tests/families/<script>` with `args` under the `.venv` Python, `input` as JSON on its
/// stdin, and returns the JSON it prints.
pub fn python(script: &str, args: &[&str], input: &Value) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(root.join("../../.venv/bin/python"))
        .arg(root.join("tests/families").join(script))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{script} failed");
    serde_json::from_slice(&out.stdout).unwrap()
}
