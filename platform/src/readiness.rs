//! Readiness: true while the process wants traffic, false once shutdown began.

use tokio_util::sync::CancellationToken;

/// A cheap, cloneable readiness flag that others can wait on. Ready when made:
/// services bind (and load their data) first.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    shutting_down: CancellationToken,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_ready(&self) -> bool {
        !self.shutting_down.is_cancelled()
    }

    /// Turns not-ready for good: the process is shutting down.
    pub fn set_not_ready(&self) {
        self.shutting_down.cancel();
    }

    /// Resolves once the process is not ready.
    pub async fn not_ready(&self) {
        self.shutting_down.cancelled().await;
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
