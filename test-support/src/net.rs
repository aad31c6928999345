//! An address nothing answers on, held for as long as a test needs it.

use std::net::SocketAddr;
use tokio::net::TcpSocket;

/// A loopback port bound but never listened on: connecting is refused, and no
/// other process can take the port while this lives (unlike a port that was
/// merely free a moment ago).
#[derive(Debug)]
pub struct RefusedPort {
    _socket: TcpSocket,
    pub addr: SocketAddr,
}

impl RefusedPort {
    pub fn bind() -> Self {
        let socket = TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("a free loopback port");
        let addr = socket.local_addr().expect("a bound socket has an address");
        Self {
            _socket: socket,
            addr,
        }
    }

    /// `http://127.0.0.1:port`, as endpoints are configured.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connecting_to_a_refused_port_is_refused() {
        let refused = RefusedPort::bind();
        let err = tokio::net::TcpStream::connect(refused.addr)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
