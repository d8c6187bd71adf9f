//! Shared by the tests that run the built `ccm` binary: the command with a clean environment,
//! the test servers' variables, `ccm serve` as a child killed on drop and the address it
//! announces, plain HTTP/1.1 probes, and polling with a deadline.
#![allow(dead_code)]

mod wire;

#[allow(unused_imports)]
pub use wire::http_get;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `ccm` with a clean environment (no settings leak in from the caller) run from the repo root.
pub fn ccm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ccm"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .current_dir(root())
        .args(["--env-file", "/nonexistent/ccm.env"]);
    c
}

/// The value of a test env var, or a failure that says how to start the servers.
pub fn need(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: start the test servers with `bash scripts/services.sh start` and `source .ci-work/run/env` (or run `bash scripts/test.sh`)")
    })
}

/// `CCM_TEST_ETCDCTL`, or `etcdctl` on the PATH.
pub fn etcdctl() -> String {
    std::env::var("CCM_TEST_ETCDCTL").unwrap_or_else(|_| "etcdctl".into())
}

/// A port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Nanoseconds since the epoch: a suffix no earlier run used (prefixes, databases, buckets).
pub fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A finished command's stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The seed templates with a one-minute boot (the simulated cloud runs on real time here),
/// written to a fresh directory named after `tag`; returns the file.
pub fn fast_templates(tag: &str) -> PathBuf {
    let seed = std::fs::read_to_string(root().join("config/worker-templates.yaml")).unwrap();
    let fast = seed.replace(
        "    drain_timeout_hours:",
        "    startup_minutes: 1\n    drain_timeout_hours:",
    );
    assert_eq!(fast.matches("startup_minutes: 1").count(), 2);
    let dir = std::env::temp_dir().join(format!("ccm-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("worker-templates.yaml");
    std::fs::write(&path, fast).unwrap();
    path
}

/// A child process, killed and reaped when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `ccm serve` and what its first line announced.
pub struct Serving {
    /// The process, killed when this is dropped.
    pub child: Killed,
    /// The rest of its stdout.
    pub stdout: BufReader<ChildStdout>,
    /// The first line it printed.
    pub first: String,
    /// The HTTP address in that line.
    pub addr: SocketAddr,
}

/// Spawns `c` (a `ccm serve`) with its stdout piped and reads the first line it prints and
/// the HTTP address in it.
pub fn start(c: &mut Command) -> Serving {
    let mut child = Killed(c.stdout(Stdio::piped()).spawn().unwrap());
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let addr: SocketAddr = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {first:?}"));
    Serving {
        child,
        stdout,
        first,
        addr,
    }
}

/// Calls `probe` every `every` until it gives `Ok`; past `limit` fails with the last `Err`.
pub fn poll<T>(
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(why) => assert!(Instant::now() < deadline, "{why}"),
        }
        std::thread::sleep(every);
    }
}
