//! What the command-line tests share: running the binary against a registry of their own.
use std::path::Path;
use std::process::{Command, Output};

/// `finerank --device cpu` with `home` as its registry and no model from the environment, for a
/// test to add arguments and environment to.
pub fn command(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_finerank"));
    c.args(["--device", "cpu"])
        .env("FINERANK_HOME", home)
        .env_remove("FINERANK_MODEL");
    c
}

/// `finerank --device cpu ARGS` with `home` as its registry and no model from the environment.
pub fn finerank(home: &Path, args: &[&str]) -> Output {
    command(home).args(args).output().unwrap()
}

/// Everything the command printed, stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
