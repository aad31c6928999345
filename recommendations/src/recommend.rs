//! Recommending: request validation as docs/design.md states it, and random sampling of a shelf.

use crate::catalog::{Book, Catalog, Category};
use rand::seq::IndexedRandom;
use std::future::Future;

/// How many books a request gets when it asks for 0 (proto3's "not set").
pub const DEFAULT_MAX_RESULTS: usize = 3;
/// The most books one request gets; larger asks are capped, not rejected.
pub const MAX_RESULTS_CAP: usize = 20;

/// A request that failed validation: which field, and why (safe to show a client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {description}")]
pub struct InvalidRequest {
    pub field: &'static str,
    pub description: String,
}

impl InvalidRequest {
    fn new(field: &'static str, description: impl Into<String>) -> Self {
        Self {
            field,
            description: description.into(),
        }
    }
}

/// A validated request for recommendations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub user_id: u32,
    pub category: Category,
    /// Between 1 and [`MAX_RESULTS_CAP`].
    pub max_results: usize,
}

impl Query {
    /// Validates the raw request fields; `category` is `None` when the request named
    /// no category or one this service does not know.
    pub fn new(
        user_id: i32,
        category: Option<Category>,
        max_results: i32,
    ) -> Result<Self, InvalidRequest> {
        let category = category.ok_or_else(|| {
            InvalidRequest::new("category", "a known, specified category is required")
        })?;
        let max_results = match usize::try_from(max_results) {
            Err(_) => return Err(InvalidRequest::new("max_results", "must not be negative")),
            Ok(0) => DEFAULT_MAX_RESULTS,
            Ok(n) => n.min(MAX_RESULTS_CAP),
        };
        let user_id = u32::try_from(user_id)
            .map_err(|_| InvalidRequest::new("user_id", "must not be negative"))?;
        Ok(Self {
            user_id,
            category,
            max_results,
        })
    }
}

/// Where books come from. The gRPC service is generic over it, so tests can plug in a
/// slow or failing source.
pub trait BookSource: Send + Sync + 'static {
    /// Distinct books of `query.category`, at most `query.max_results` of them.
    fn recommend(&self, query: Query) -> impl Future<Output = Vec<Book>> + Send;

    /// How many books `category` holds, for the `recommendations_catalog_books` gauge.
    fn count(&self, category: Category) -> usize;
}

impl BookSource for Catalog {
    fn recommend(&self, query: Query) -> impl Future<Output = Vec<Book>> + Send {
        // Sampled before the future is built: the thread-local RNG must not cross an await.
        std::future::ready(sample(self.books(query.category), query.max_results))
    }

    fn count(&self, category: Category) -> usize {
        self.books(category).len()
    }
}

/// A uniformly random sample of `books` without replacement: `amount` of them, or all
/// of them when there are fewer.
pub fn sample(books: &[Book], amount: usize) -> Vec<Book> {
    books.sample(&mut rand::rng(), amount).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn invalid_field(user_id: i32, category: Option<Category>, max_results: i32) -> &'static str {
        Query::new(user_id, category, max_results)
            .unwrap_err()
            .field
    }

    fn max_results_for(asked: i32) -> usize {
        Query::new(1, Some(Category::Mystery), asked)
            .unwrap()
            .max_results
    }

    #[test]
    fn a_missing_or_unknown_category_is_invalid_naming_category() {
        assert_eq!(invalid_field(1, None, 3), "category");
    }

    #[test]
    fn a_negative_max_results_is_invalid_naming_max_results() {
        assert_eq!(invalid_field(1, Some(Category::Mystery), -1), "max_results");
        assert_eq!(
            invalid_field(1, Some(Category::Mystery), i32::MIN),
            "max_results"
        );
    }

    #[test]
    fn zero_max_results_means_the_default_of_three() {
        assert_eq!(max_results_for(0), 3);
    }

    #[test]
    fn max_results_up_to_twenty_is_kept_and_above_is_capped_at_twenty() {
        assert_eq!(max_results_for(1), 1);
        assert_eq!(max_results_for(20), 20);
        assert_eq!(max_results_for(21), 20);
        assert_eq!(max_results_for(i32::MAX), 20);
    }

    #[test]
    fn a_negative_user_id_is_invalid_naming_user_id() {
        assert_eq!(invalid_field(-1, Some(Category::SelfHelp), 3), "user_id");
    }

    #[test]
    fn a_zero_user_id_is_valid() {
        let query = Query::new(0, Some(Category::ScienceFiction), 5).unwrap();
        assert_eq!(query.user_id, 0);
        assert_eq!(query.category, Category::ScienceFiction);
        assert_eq!(query.max_results, 5);
    }

    fn shelf(n: i32) -> Vec<Book> {
        (1..=n)
            .map(|id| Book {
                id,
                title: format!("Book {id}"),
                category: Category::Mystery,
            })
            .collect()
    }

    #[test]
    fn a_sample_never_repeats_a_book_and_never_exceeds_the_amount() {
        let books = shelf(12);
        for round in 0..1000 {
            let amount = round % 15;
            let picked = sample(&books, amount);
            assert_eq!(picked.len(), amount.min(books.len()));
            let ids: HashSet<i32> = picked.iter().map(|b| b.id).collect();
            assert_eq!(ids.len(), picked.len(), "duplicates in {picked:?}");
            assert!(picked.iter().all(|b| books.contains(b)));
        }
    }

    #[test]
    fn a_shelf_with_fewer_books_than_asked_returns_all_of_them() {
        let books = shelf(2);
        for _ in 0..100 {
            let mut ids: Vec<i32> = sample(&books, 20).iter().map(|b| b.id).collect();
            ids.sort_unstable();
            assert_eq!(ids, [1, 2]);
        }
        assert!(sample(&[], 3).is_empty());
    }

    #[test]
    fn sampling_eventually_picks_every_book() {
        let books = shelf(12);
        let seen: HashSet<i32> = (0..1000)
            .flat_map(|_| sample(&books, 3))
            .map(|b| b.id)
            .collect();
        assert_eq!(seen.len(), books.len());
    }

    #[tokio::test]
    async fn the_catalog_recommends_only_books_of_the_asked_category() {
        let catalog = Catalog::embedded().unwrap();
        for category in Category::ALL {
            for _ in 0..200 {
                let query = Query::new(1, Some(category), 5).unwrap();
                let books = catalog.recommend(query).await;
                assert_eq!(books.len(), 5);
                assert!(books.iter().all(|b| b.category == category), "{books:?}");
            }
        }
    }
}
