//! The page model: the shelves and books a page shows, and the
//! [`Recommendations`] boundary the pages depend on (faked in tests).

use async_trait::async_trait;
use serde::Serialize;

/// A shelf of the bookstore, as the marketplace names it in URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Mystery,
    ScienceFiction,
    SelfHelp,
}

impl Category {
    pub const ALL: [Category; 3] = [Self::Mystery, Self::ScienceFiction, Self::SelfHelp];

    /// The value of `?category=` that selects this shelf.
    pub fn slug(self) -> &'static str {
        match self {
            Self::Mystery => "mystery",
            Self::ScienceFiction => "science_fiction",
            Self::SelfHelp => "self_help",
        }
    }

    pub fn from_slug(slug: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|category| category.slug() == slug)
    }

    /// The shelf's name as people read it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Mystery => "Mystery",
            Self::ScienceFiction => "Science fiction",
            Self::SelfHelp => "Self-help",
        }
    }
}

/// One recommended book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Book {
    pub id: i32,
    pub title: String,
}

/// Why no recommendations could be had; the page shows a notice instead.
#[derive(Debug, thiserror::Error)]
pub enum RecommendationsError {
    #[error("recommendations is unavailable: {0}")]
    Unavailable(String),
    #[error("recommendations did not answer within its deadline")]
    DeadlineExceeded,
    #[error("recommendations answered with an invalid response: {0}")]
    InvalidResponse(String),
    #[error("recommendations failed: {0}")]
    Failed(String),
}

impl RecommendationsError {
    /// The `reason` label of `marketplace_recommendations_fallback_total`:
    /// one of a fixed few values, never the error's text.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::InvalidResponse(_) | Self::Failed(_) => "error",
        }
    }
}

/// What the pages need from the recommendations service.
#[async_trait]
pub trait Recommendations: Send + Sync {
    /// At most `max_results` books of `category`.
    async fn recommend(
        &self,
        category: Category,
        max_results: u32,
    ) -> Result<Vec<Book>, RecommendationsError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_category_round_trips_through_its_slug() {
        for category in Category::ALL {
            assert_eq!(Category::from_slug(category.slug()), Some(category));
        }
        assert_eq!(Category::from_slug("Mystery"), None);
        assert_eq!(Category::from_slug(""), None);
    }

    #[test]
    fn slugs_and_labels_are_the_ones_urls_and_headings_use() {
        let named: Vec<_> = Category::ALL
            .into_iter()
            .map(|category| (category.slug(), category.label()))
            .collect();
        assert_eq!(
            named,
            [
                ("mystery", "Mystery"),
                ("science_fiction", "Science fiction"),
                ("self_help", "Self-help"),
            ]
        );
    }
}
