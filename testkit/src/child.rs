//! Re-running the current test binary as a child that runs one ignored
//! test (`--exact --ignored --nocapture --test-threads=1`).

use std::process::{Command, Output};

/// A command that runs the ignored test `test` of this test binary alone,
/// with its output not captured; add the environment and run it.
pub fn command(test: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary's path"));
    cmd.args([
        test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd
}

/// Standard output followed by standard error, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the ignored test `test` in a child with `env` set; whether it
/// succeeded, and its output ([`text`]).
pub fn run(test: &str, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = command(test);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("starting the child test process");
    (out.status.success(), text(&out))
}
