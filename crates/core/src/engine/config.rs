//! Engine configuration.

use crate::error::{EngineError, Result};

/// How an engine runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Most tasks running at once.
    pub concurrency: usize,
    /// Lease length in ms; runs are renewed well before it ends.
    pub lease_ms: u64,
    /// Log lines kept per task.
    pub log_tail_max: usize,
    /// Lease owner name written on claimed tasks.
    pub owner: String,
    /// Threads running native handlers.
    pub native_threads: usize,
    /// How long a timed-out run may take to return before its executor is reported stuck.
    pub timeout_grace_ms: u64,
    /// How long ended tasks are kept in the store (default: forever).
    pub retention: crate::store::Retention,
    /// With a shared store: the longest the dispatcher sleeps without a notification from
    /// the store (a safety poll, should one be lost).
    pub poll_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            concurrency: 16,
            lease_ms: 30_000,
            log_tail_max: 100,
            owner: format!("pid-{}", std::process::id()),
            native_threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            timeout_grace_ms: 1000,
            retention: Default::default(),
            poll_ms: 2_000,
        }
    }
}

/// Shortest lease accepted.
pub const MIN_LEASE_MS: u64 = 100;

impl EngineConfig {
    /// Checks the fields, naming the wrong one.
    pub fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            return Err(EngineError::Invalid(
                "concurrency must be a positive integer".into(),
            ));
        }
        if self.lease_ms < MIN_LEASE_MS {
            return Err(EngineError::Invalid(format!(
                "leaseMs must be at least {MIN_LEASE_MS}"
            )));
        }
        if self.native_threads == 0 {
            return Err(EngineError::Invalid(
                "nativeThreads must be a positive integer".into(),
            ));
        }
        if self.poll_ms == 0 {
            return Err(EngineError::Invalid(
                "pollMs must be a positive integer".into(),
            ));
        }
        if self.owner.is_empty() {
            return Err(EngineError::Invalid(
                "workerId must be a non-empty string".into(),
            ));
        }
        Ok(())
    }
}
