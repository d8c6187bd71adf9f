//! What the daemon reports beyond the loops' own counters: readiness, rendered as Prometheus
//! text.
//!
//! The loops' counters (bindings, unschedulable by reason, loop durations, leadership) come
//! from [`ccm_core::runtime::MetricsSnapshot::to_prometheus`]; `/metrics` serves both.

use std::fmt::Write as _;
use std::sync::Mutex;

/// Live status of one loop, as `/readyz` shows it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LoopStatus {
    /// Whether the loop runs in this process at all.
    pub enabled: bool,
    /// Whether this process leads the loop now.
    pub is_leader: bool,
    /// Reconcile passes run as leader.
    pub runs: u64,
    /// Duration of the last pass (seconds).
    pub last_duration_seconds: f64,
}

#[derive(Debug, Default)]
struct Inner {
    ready: bool,
}

/// Readiness of one daemon (thread-safe).
#[derive(Debug, Default)]
pub struct DaemonStatus {
    inner: Mutex<Inner>,
}

impl DaemonStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the daemon ready (backends connected, loops started) or not.
    pub fn set_ready(&self, ready: bool) {
        self.lock().ready = ready;
    }

    /// Whether the daemon is ready.
    pub fn ready(&self) -> bool {
        self.lock().ready
    }

    /// Prometheus text of the daemon's own families.
    pub fn render(&self) -> String {
        let g = self.lock();
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, v: f64| {
            let _ = write!(
                out,
                "# HELP ccm_{name} {help}\n# TYPE ccm_{name} gauge\nccm_{name} {v}\n"
            );
        };
        gauge(
            "ready",
            "1 when backends are connected and the loops run.",
            f64::from(u8::from(g.ready)),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_readiness() {
        let s = DaemonStatus::default();
        let text = s.render();
        assert!(text.lines().any(|l| l == "ccm_ready 0"), "{text}");
        assert!(text.contains("# TYPE ccm_ready gauge"), "{text}");
        s.set_ready(true);
        assert!(s.ready());
        assert!(s.render().lines().any(|l| l == "ccm_ready 1"));
    }
}
