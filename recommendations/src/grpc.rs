//! The gRPC adapter: the generated `Recommendations` trait over a [`BookSource`].

use crate::{
    catalog::{Book, Category},
    recommend::{BookSource, InvalidRequest, Query},
};
use recommendations_proto::v1::{
    BookCategory, BookRecommendation, RecommendationRequest, RecommendationResponse,
    recommendations_server::Recommendations,
};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Serves `recommendations.v1.Recommendations` from any [`BookSource`].
#[derive(Debug)]
pub struct RecommendationsService<B> {
    source: B,
}

impl<B: BookSource> RecommendationsService<B> {
    pub fn new(source: B) -> Self {
        Self { source }
    }
}

#[tonic::async_trait]
impl<B: BookSource> Recommendations for RecommendationsService<B> {
    async fn recommend(
        &self,
        request: Request<RecommendationRequest>,
    ) -> Result<Response<RecommendationResponse>, Status> {
        let request = request.into_inner();
        let query = Query::new(
            request.user_id,
            category(request.category),
            request.max_results,
        )?;
        let books = self.source.recommend(query).await;
        Ok(Response::new(RecommendationResponse {
            recommendations: books.into_iter().map(recommendation).collect(),
        }))
    }
}

/// The domain category of a wire value; `None` for UNSPECIFIED and for numbers this
/// build does not know (proto3 enums are open: any i32 can arrive).
fn category(value: i32) -> Option<Category> {
    match BookCategory::try_from(value).ok()? {
        BookCategory::Unspecified => None,
        BookCategory::Mystery => Some(Category::Mystery),
        BookCategory::ScienceFiction => Some(Category::ScienceFiction),
        BookCategory::SelfHelp => Some(Category::SelfHelp),
    }
}

fn recommendation(book: Book) -> BookRecommendation {
    BookRecommendation {
        id: book.id,
        title: book.title,
    }
}

/// The one place a domain error becomes a status: INVALID_ARGUMENT with a
/// `google.rpc.BadRequest` field violation, as docs/design.md promises clients.
impl From<InvalidRequest> for Status {
    fn from(err: InvalidRequest) -> Self {
        Status::with_error_details(
            Code::InvalidArgument,
            err.to_string(),
            ErrorDetails::with_bad_request_violation(err.field, err.description),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_categories_map_to_domain_ones_and_unspecified_or_unknown_to_none() {
        assert_eq!(category(0), None);
        assert_eq!(category(1), Some(Category::Mystery));
        assert_eq!(category(2), Some(Category::ScienceFiction));
        assert_eq!(category(3), Some(Category::SelfHelp));
        assert_eq!(category(99), None);
        assert_eq!(category(-1), None);
    }

    #[test]
    fn an_invalid_request_becomes_invalid_argument_with_a_field_violation() {
        let status = Status::from(InvalidRequest {
            field: "max_results",
            description: "must not be negative".into(),
        });
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid max_results: must not be negative"
        );
        let violations = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "max_results");
        assert_eq!(violations[0].description, "must not be negative");
    }
}
