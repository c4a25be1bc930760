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

/// The first line of `text` that holds `tag` (a child's report line, such
/// as `STRESS checked=...`), from the tag on.
pub fn report_line<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.find(tag).map(|i| &l[i..]))
}

/// The value of `key=value` in a report line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}
