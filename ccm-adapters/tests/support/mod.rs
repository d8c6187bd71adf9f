//! Shared by the adapter tests against the real test servers (`scripts/services.sh`): their
//! addresses from the environment, the repository's scripts, free ports, and (feature `etcd`)
//! etcd stores and members. Each test file declares `mod support;` and uses what it needs.
#![allow(dead_code)]

#[cfg(feature = "etcd")]
pub mod etcd;

use std::path::PathBuf;
use std::process::Command;

/// The test environment variable `name` (a server address, the venv python, ...); panics
/// with how to get it when it is not set.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: start the test services (`bash scripts/services.sh start`) and \
             `source .ci-work/run/env` (CI: scripts/test.sh does both)"
        )
    })
}

/// The test venv's python (`CCM_TEST_PYTHON`: boto3, cloudevents, virl2-client, PyYAML).
pub fn python() -> String {
    env("CCM_TEST_PYTHON")
}

/// The workspace root (where `scripts/` and `config/` are).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A TCP port on 127.0.0.1 nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `cmd` (described as `what` in the messages), asserts it succeeded and returns what
/// it printed on stdout.
pub fn run(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `scripts/{script}` (an independent check with the venv python, e.g. boto3's view of
/// what ccm wrote) with `args`; asserts it succeeded and returns the JSON it printed.
pub fn check_script(script: &str, args: &[&str]) -> serde_json::Value {
    let path = repo_root().join("scripts").join(script);
    let out = run(
        Command::new(python()).arg(&path).args(args),
        &format!("{script} {args:?}"),
    );
    serde_json::from_slice(&out).unwrap()
}

/// Runs `$CCM_TEST_SERVICES args...` (scripts/services.sh: `member stop etcd-m1`,
/// `auth enable etcd-single <root password>`, ...) and asserts it succeeded.
pub fn services(args: &[&str]) {
    let script = env("CCM_TEST_SERVICES");
    run(
        Command::new("bash").arg(&script).args(args),
        &format!("{script} {args:?}"),
    );
}
