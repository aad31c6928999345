//! Readiness: true while the process wants traffic, false once shutdown began.

use std::sync::Arc;
use tokio::sync::watch;

/// A cheap, cloneable readiness flag that others can wait on.
#[derive(Clone, Debug)]
pub struct Readiness {
    ready: Arc<watch::Sender<bool>>,
}

impl Default for Readiness {
    /// Ready: services bind (and load their data) before they exist.
    fn default() -> Self {
        Self {
            ready: Arc::new(watch::Sender::new(true)),
        }
    }
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Turns not-ready for good: the process is shutting down.
    pub fn set_not_ready(&self) {
        self.ready.send_replace(false);
    }

    /// Resolves once the process is not ready.
    pub async fn not_ready(&self) {
        // The sender lives in `self`, so waiting cannot fail.
        let _ = self.ready.subscribe().wait_for(|ready| !ready).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn not_ready_resolves_after_the_flag_turns() {
        let readiness = Readiness::new();
        assert!(readiness.is_ready());
        let waiter = tokio::spawn({
            let readiness = readiness.clone();
            async move { readiness.not_ready().await }
        });
        readiness.set_not_ready();
        waiter.await.unwrap();
        assert!(!readiness.is_ready());
    }
}
