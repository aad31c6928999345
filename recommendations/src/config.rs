//! The service's settings, parsed once from flags and environment before anything binds.

use clap::Parser;
use platform::config::CommonArgs;
use std::path::PathBuf;

/// Every setting of the service; `--help` lists them with their environment names.
#[derive(Parser, Debug, Clone, PartialEq)]
#[command(version, about)]
pub struct Config {
    /// Port of the gRPC listener (Recommendations, grpc.health.v1, reflection).
    #[arg(long, env = "GRPC_PORT", default_value_t = 50051)]
    pub grpc_port: u16,

    /// Port of the admin listener (/metrics, /healthz, /readyz).
    #[arg(long, env = "ADMIN_PORT", default_value_t = 9464)]
    pub admin_port: u16,

    /// A JSON catalog to serve instead of the embedded one.
    #[arg(long, env = "CATALOG_PATH")]
    pub catalog_path: Option<PathBuf>,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_flags_are_consistent() {
        Config::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_design() {
        let config = Config::try_parse_from(["recommendations"]).unwrap();
        assert_eq!(config.grpc_port, 50051);
        assert_eq!(config.admin_port, 9464);
        assert_eq!(config.catalog_path, None);
    }

    #[test]
    fn a_bad_port_is_rejected_naming_the_setting() {
        let err = Config::try_parse_from(["recommendations", "--grpc-port", "abc"]).unwrap_err();
        assert!(err.to_string().contains("GRPC_PORT"), "{err}");
    }
}
