//! The Recommend baseline: the service's own handler over the same embedded
//! catalog in a bare tonic server: no layers, no health, no reflection, no
//! telemetry, no logs. What the recommendations binary adds costs the difference.

use clap::Parser;
use recommendations::{catalog::Catalog, grpc::RecommendationsService};
use recommendations_proto::v1::recommendations_server::RecommendationsServer;
use tonic::transport::{Server, server::TcpIncoming};

#[derive(Parser)]
struct Args {
    /// Loopback port; 0 picks a free one (announced on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let catalog = Catalog::embedded()?;
    let (listener, _) = bench::listen("grpc_addr", args.port).await?;
    // As the service does: small messages, no Nagle delay.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(RecommendationsServer::new(RecommendationsService::new(
            catalog,
        )))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
