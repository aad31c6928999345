//! The gRPC client of the recommendations service: [`Recommendations`] over a
//! channel wrapped in platform's client middleware.

use crate::{Book, Category, Config, Recommendations, RecommendationsError, StartupError};
use async_trait::async_trait;
use platform::grpc::ClientStack;
use prometheus::Registry;
use recommendations_proto::v1::{
    BookCategory, FILE_DESCRIPTOR_SET, RecommendationRequest,
    recommendations_client::RecommendationsClient,
};
use std::time::Duration;
use tonic::{
    Code, Status,
    transport::{Channel, Endpoint},
};
use tower::Layer as _;

impl From<Category> for BookCategory {
    fn from(category: Category) -> Self {
        match category {
            Category::Mystery => Self::Mystery,
            Category::ScienceFiction => Self::ScienceFiction,
            Category::SelfHelp => Self::SelfHelp,
        }
    }
}

impl From<Status> for RecommendationsError {
    fn from(status: Status) -> Self {
        match status.code() {
            // A connection refused or reset maps to UNAVAILABLE in tonic.
            Code::Unavailable => Self::Unavailable(status.message().to_owned()),
            // tonic reports its own expired timeouts as CANCELLED.
            Code::DeadlineExceeded | Code::Cancelled => Self::DeadlineExceeded,
            code => Self::Failed(format!("{code:?}: {}", status.message())),
        }
    }
}

/// The marketplace has no accounts: every request speaks for the same user,
/// as in the original tutorial.
const USER_ID: i32 = 1;

/// [`Recommendations`] over gRPC, on one long-lived channel.
#[derive(Debug, Clone)]
pub struct GrpcRecommendations {
    /// The channel in platform's client layers: a CLIENT span carrying the trace
    /// to recommendations, an access line and the `grpc_client_*` metrics.
    client: RecommendationsClient<ClientStack<Channel>>,
    timeout: Duration,
}

impl GrpcRecommendations {
    /// Connects on first use and reconnects by itself, so the marketplace
    /// starts (and stays ready) while recommendations is down. The client
    /// metrics are registered in `registry`.
    ///
    /// Every call has the `RECOMMENDATIONS_TIMEOUT_MS` deadline, and so has
    /// connecting. A call that runs out of time counts as
    /// `grpc_code="Canceled"` whichever deadline ends it: tonic's
    /// (`grpc-timeout`, which it reports as CANCELLED) or the page's, which
    /// drops the call.
    ///
    /// HTTP/2 PINGs, idle or not, notice a peer that stopped answering (a
    /// crashed node, a dropped NAT entry): calls on that connection then fail
    /// UNAVAILABLE at once and the next call reconnects, rather than every call
    /// running into its deadline until TCP gives up, minutes later.
    pub fn new(config: &Config, registry: &Registry) -> Result<Self, StartupError> {
        let timeout = config.recommendations_timeout;
        let channel = Endpoint::from_shared(config.recommendations_uri())
            .map_err(StartupError::Address)?
            .connect_timeout(timeout)
            .http2_keep_alive_interval(config.channel.keepalive_interval)
            .keep_alive_timeout(config.channel.keepalive_timeout)
            .keep_alive_while_idle(true)
            .connect_lazy();
        let layers = platform::grpc::client_layers(registry, &[FILE_DESCRIPTOR_SET])?;
        let client = RecommendationsClient::new(layers.layer(channel))
            .max_decoding_message_size(config.channel.recommendations_max_response_bytes);
        Ok(Self { client, timeout })
    }
}

#[async_trait]
impl Recommendations for GrpcRecommendations {
    async fn recommend(
        &self,
        category: Category,
        max_results: u32,
    ) -> Result<Vec<Book>, RecommendationsError> {
        let mut request = tonic::Request::new(RecommendationRequest {
            user_id: USER_ID,
            category: BookCategory::from(category).into(),
            max_results: i32::try_from(max_results).unwrap_or(i32::MAX),
        });
        // Sent as `grpc-timeout`, so the server gives up when we do.
        request.set_timeout(self.timeout);
        // Clones share the channel; the generated client wants `&mut self`.
        let response = self.client.clone().recommend(request).await?.into_inner();
        if response.recommendations.len() > max_results as usize {
            return Err(RecommendationsError::InvalidResponse(format!(
                "{} books for at most {max_results}",
                response.recommendations.len()
            )));
        }
        Ok(response
            .recommendations
            .into_iter()
            .map(|book| Book {
                id: book.id,
                title: book.title,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_category_maps_to_its_proto_value() {
        let wire: Vec<_> = Category::ALL.into_iter().map(BookCategory::from).collect();
        assert_eq!(
            wire,
            [
                BookCategory::Mystery,
                BookCategory::ScienceFiction,
                BookCategory::SelfHelp
            ]
        );
    }

    #[test]
    fn grpc_statuses_map_to_fallback_reasons() {
        let reason = |status| RecommendationsError::from(status).reason();
        assert_eq!(reason(Status::unavailable("down")), "unavailable");
        assert_eq!(
            reason(Status::deadline_exceeded("late")),
            "deadline_exceeded"
        );
        assert_eq!(
            reason(Status::cancelled("Timeout expired")),
            "deadline_exceeded"
        );
        assert_eq!(reason(Status::invalid_argument("category")), "error");
    }
}
