//! What `cargo xtask bench` runs besides the services: the two baselines
//! (`bare-tonic`, `bare-axum`) and `bench-tool` (the prepared gRPC body,
//! answer checks with a real gRPC client, exec-to-SERVING, an OTLP sink).

use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Binds a loopback listener and announces it on stdout as one JSON line,
/// `{"message":"listening","<name>":"127.0.0.1:port"}`, the way the services
/// announce theirs, so the bench finds every process's port the same way.
pub async fn listen(name: &str, port: u16) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!(
        "{}",
        serde_json::json!({"message": "listening", name: addr.to_string()})
    );
    Ok((listener, addr))
}
