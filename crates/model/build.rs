//! Link settings for every crate whose binaries or tests load libtorch (each names this file as its
//! `build` script, because `rustc-link-arg` only reaches the binaries of the crate that emits it).
//!
//! - rpaths to libtorch's lib dir, so `finerank` runs without LD_LIBRARY_PATH: first where the torch
//!   wheel sits beside an installed `finerank` (the finerank wheel puts the binary in the
//!   environment's `bin/`, and pip puts torch in its `lib/pythonX.Y/site-packages/`), then the
//!   libtorch this build linked, for the binaries under `target/`. One binary serves both, so the
//!   wheel is the release build as it is, with nothing rebuilt to package it.
//! - `--no-as-needed -ltorch_cuda`: nothing references libtorch_cuda's symbols directly, so the linker
//!   would drop it and libtorch would never see a GPU.
use std::path::PathBuf;
use std::process::Command;

/// The Pythons the torch 2.11 wheel is built for (its `Requires-Python` and tags).
const PYTHONS: [&str; 5] = [
    "python3.10",
    "python3.11",
    "python3.12",
    "python3.13",
    "python3.14",
];

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
    // `$ORIGIN` reaches the linker literally: cargo passes arguments without a shell.
    for python in PYTHONS {
        for packages in ["site-packages", "dist-packages"] {
            println!(
                "cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../lib/{python}/{packages}/torch/lib"
            );
        }
    }
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
