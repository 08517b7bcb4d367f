//! Link settings for every crate whose binaries or tests load libtorch (each names this file as its
//! `build` script, because `rustc-link-arg` only reaches the binaries of the crate that emits it).
//!
//! - An rpath to libtorch's lib dir, so `finerank` runs without LD_LIBRARY_PATH.
//! - `--no-as-needed -ltorch_cuda`: nothing references libtorch_cuda's symbols directly, so the linker
//!   would drop it and libtorch would never see a GPU.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let root = match std::env::var_os("LIBTORCH") {
        Some(dir) => PathBuf::from(dir),
        None => torch_dir_from_python(),
    };
    let lib = root.join("lib");
    let lib = lib.canonicalize().unwrap_or_else(|e| {
        panic!(
            "libtorch not found at {} ({e}); run scripts/bootstrap.sh first",
            lib.display()
        )
    });
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

fn torch_dir_from_python() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import torch, os; print(os.path.dirname(torch.__file__))",
        ])
        .output()
        .expect("LIBTORCH is unset and python3 could not be run; run scripts/bootstrap.sh first");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
