//! What the bookshop's Rust tests share: a binary run as a child and its log
//! followed ([`process`]), spans and log lines kept in memory ([`spans`],
//! [`logs`]), metrics read from a registry ([`metrics`]), an address that
//! refuses connections ([`net`]), checks of a service's settings
//! ([`settings`]), the test-only `dummy.v1` gRPC service
//! ([`dummy`]), an OTLP/gRPC trace receiver ([`otlp`]) and, with the feature
//! `oracles`, the checks the property tests and the fuzz targets share.

pub mod dummy;
pub mod logs;
pub mod metrics;
pub mod net;
#[cfg(feature = "oracles")]
pub mod oracles;
pub mod otlp;
pub mod process;
pub mod settings;
pub mod spans;

use std::time::Duration;

/// The most any one step of a test waits: generous, because the machine is
/// shared and this only bounds a test that is failing anyway.
pub const WAIT: Duration = Duration::from_secs(10);
