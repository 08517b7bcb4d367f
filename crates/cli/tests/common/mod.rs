//! What the command-line tests share: running the binary against a registry of their own.
use std::path::Path;
use std::process::{Command, Output};

/// `finerank --device cpu ARGS` with `home` as its registry and no model from the environment.
pub fn finerank(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_finerank"))
        .args(["--device", "cpu"])
        .args(args)
        .env("FINERANK_HOME", home)
        .env_remove("FINERANK_MODEL")
        .output()
        .unwrap()
}

/// Everything the command printed, stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
