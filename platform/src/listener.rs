//! Binding listeners with errors that say which listener and which address.

use std::net::{Ipv4Addr, SocketAddr};
use tokio::net::TcpListener;

/// A listener that could not be bound (or whose address could not be read).
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for {name} on {addr}: {source}")]
pub struct BindError {
    name: &'static str,
    addr: SocketAddr,
    source: std::io::Error,
}

/// Binds `0.0.0.0:port` (port 0 picks a free port, as tests do) and returns the
/// listener with the address it really got.
pub async fn bind(name: &'static str, port: u16) -> Result<(TcpListener, SocketAddr), BindError> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let error = |source| BindError { name, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let local = listener.local_addr().map_err(error)?;
    Ok((listener, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn port_zero_reports_the_port_it_got_and_a_taken_port_names_the_listener() {
        let (_listener, addr) = bind("first", 0).await.unwrap();
        assert_ne!(addr.port(), 0);
        let err = bind("second", addr.port()).await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "cannot listen for second on 0.0.0.0:{}: ",
                addr.port()
            )),
            "{err}"
        );
    }
}
