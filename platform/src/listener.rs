//! Binding listeners with errors that say which listener and which address.

use anyhow::Context;
use std::net::{Ipv4Addr, SocketAddr};
use tokio::net::TcpListener;

/// Binds `0.0.0.0:port` (port 0 picks a free port, as tests do).
pub async fn bind(name: &str, port: u16) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {name} on {addr}"))
}
