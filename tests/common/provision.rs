//! What the suite needs beyond Rust (promtool, libfaketime, PostgreSQL, Debian packages),
//! provisioned on first use by `tests/provision.sh`, which installs or unpacks what is missing
//! under one lock, so test binaries running in parallel never provision at the same moment.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The line `tests/provision.sh <args>` prints (a path), run once per process and argument list.
pub fn provisioned(args: &[&str]) -> String {
    static DONE: Mutex<BTreeMap<Vec<String>, String>> = Mutex::new(BTreeMap::new());
    let key: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = done.get(&key) {
        return path.clone();
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/provision.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("bash tests/provision.sh {args:?}: {e}"));
    assert!(
        out.status.success(),
        "tests/provision.sh {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !path.is_empty(),
        "tests/provision.sh {} printed nothing",
        args.join(" ")
    );
    done.insert(key, path.clone());
    path
}

/// A command on PATH, installed from Debian package `package` when missing.
pub fn command(name: &str, package: &str) -> String {
    provisioned(&["command", name, package])
}

/// Sends SIGTERM to process `pid` with `kill` (Debian package procps, which a minimal Debian
/// lacks), and fails the test if it could not be sent.
pub fn sigterm(pid: u32) {
    let kill = command("kill", "procps");
    let ok = std::process::Command::new(kill)
        .args(["-TERM", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -TERM {pid} failed");
}
