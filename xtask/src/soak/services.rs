//! The two services as the soak runs them: the release binaries on loopback
//! ports they choose themselves (read back from their `listening` line), with
//! nothing from the caller's environment, their output in the target dir.

use super::report::Usage;
use crate::{
    process::{self, Output, Process},
    procfs,
};
use std::{net::SocketAddr, path::Path};
use tokio::process::Command;

pub struct Service {
    pub process: Process,
    /// The gRPC listener of recommendations, the page listener of the marketplace.
    pub main_addr: SocketAddr,
    admin_addr: SocketAddr,
}

impl Service {
    /// Starts `name` (`main_field` names its main listener) with only
    /// `settings` and the soak's own, and waits until it is ready.
    pub async fn start(
        name: &'static str,
        main_field: &str,
        dirs: (&Path, &Path),
        settings: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let (bin_dir, log_dir) = dirs;
        let mut command = Command::new(bin_dir.join(name));
        command
            .env_clear()
            .envs(settings.iter().map(|(key, value)| (key, value)))
            .env("ADMIN_PORT", "0")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            // No load balancer to drain on loopback.
            .env("SHUTDOWN_DELAY_SECONDS", "0");
        let log = log_dir.join(format!("{name}.log"));
        let mut process = Process::spawn(name, &mut command, Output::File(log))?;
        let listening = process.listening().await?;
        let main_addr = process::loopback(&listening, main_field)?;
        let admin_addr = process::loopback(&listening, "admin_addr")?;
        process.ready(admin_addr).await?;
        eprintln!(
            "xtask: {name} (pid {}) is ready on {main_addr}, admin {admin_addr}",
            process.pid()
        );
        Ok(Self {
            process,
            main_addr,
            admin_addr,
        })
    }

    /// Resident memory and open descriptors now; an error once it has exited.
    pub fn usage(&mut self) -> anyhow::Result<Usage> {
        self.process.alive()?;
        let (rss_kib, fds) = procfs::usage(self.process.pid())?;
        Ok(Usage { rss_kib, fds })
    }

    /// The marketplace's `marketplace_recommendations_fallback_total`, all
    /// reasons: the degraded pages it served, as it counts them itself.
    pub async fn fallbacks(&self) -> anyhow::Result<f64> {
        let metrics = process::get(self.admin_addr, "/metrics").await?;
        process::counter(&metrics, "marketplace_recommendations_fallback_total")
    }
}
