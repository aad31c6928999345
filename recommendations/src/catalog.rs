//! The book catalog: categories, books, and loading them from JSON with errors that name the file.

use serde::Deserialize;
use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    path::Path,
};

/// The catalog compiled into the binary, used unless `CATALOG_PATH` names another.
const EMBEDDED: &str = include_str!("../data/catalog.json");

/// Where the embedded catalog "comes from", in error messages.
const EMBEDDED_ORIGIN: &str = "data/catalog.json (embedded)";

/// A shelf of the bookstore; in JSON `mystery`, `science_fiction` or `self_help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Mystery,
    ScienceFiction,
    SelfHelp,
}

impl Category {
    pub const ALL: [Category; 3] = [Self::Mystery, Self::ScienceFiction, Self::SelfHelp];

    /// The JSON name, also used as the metrics label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mystery => "mystery",
            Self::ScienceFiction => "science_fiction",
            Self::SelfHelp => "self_help",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One book of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
// A misspelt key is a mistake worth failing on, not a field to ignore.
#[serde(deny_unknown_fields)]
pub struct Book {
    pub id: i32,
    pub title: String,
    pub category: Category,
}

/// Why a catalog could not be loaded; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    // serde_json's message ends with "at line L column C".
    #[error("invalid catalog {origin}: {source}")]
    Parse {
        origin: String,
        source: serde_json::Error,
    },
    #[error("invalid catalog {origin}: book id {id} appears more than once")]
    DuplicateId { origin: String, id: i32 },
    #[error("invalid catalog {origin}: book {id} has an empty title")]
    EmptyTitle { origin: String, id: i32 },
}

/// Every book, grouped by category.
///
/// A category with no books is allowed: docs/design.md answers "fewer books than asked" with what
/// there is, and none is the limit of that. The `recommendations_catalog_books` gauge shows it.
#[derive(Debug, Clone)]
pub struct Catalog {
    shelves: BTreeMap<Category, Vec<Book>>,
}

impl Catalog {
    /// Loads the file at `path`, or the embedded catalog when there is none.
    pub fn load(path: Option<&Path>) -> Result<Self, CatalogError> {
        match path {
            Some(path) => Self::from_file(path),
            None => Self::embedded(),
        }
    }

    /// The catalog compiled into the binary.
    pub fn embedded() -> Result<Self, CatalogError> {
        Self::from_json(EMBEDDED_ORIGIN, EMBEDDED)
    }

    pub fn from_file(path: &Path) -> Result<Self, CatalogError> {
        let origin = path.display().to_string();
        let json = std::fs::read_to_string(path).map_err(|source| CatalogError::Unreadable {
            path: origin.clone(),
            source,
        })?;
        Self::from_json(origin, &json)
    }

    /// Parses a JSON array of books; `origin` names the source in errors.
    pub fn from_json(origin: impl Into<String>, json: &str) -> Result<Self, CatalogError> {
        let origin = origin.into();
        let books: Vec<Book> = match serde_json::from_str(json) {
            Ok(books) => books,
            Err(source) => return Err(CatalogError::Parse { origin, source }),
        };
        let mut ids = HashSet::new();
        let mut shelves: BTreeMap<Category, Vec<Book>> =
            Category::ALL.iter().map(|&c| (c, Vec::new())).collect();
        for book in books {
            if !ids.insert(book.id) {
                return Err(CatalogError::DuplicateId {
                    origin,
                    id: book.id,
                });
            }
            if book.title.trim().is_empty() {
                return Err(CatalogError::EmptyTitle {
                    origin,
                    id: book.id,
                });
            }
            shelves.entry(book.category).or_default().push(book);
        }
        Ok(Self { shelves })
    }

    /// The books of one category, in file order.
    pub fn books(&self, category: Category) -> &[Book] {
        self.shelves.get(&category).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_err(json: &str) -> String {
        Catalog::from_json("books.json", json)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn categories_are_named_as_in_the_json_and_in_the_metrics_labels() {
        let names: Vec<&str> = Category::ALL.into_iter().map(Category::as_str).collect();
        assert_eq!(names, ["mystery", "science_fiction", "self_help"]);
        assert_eq!(Category::ScienceFiction.to_string(), "science_fiction");
    }

    #[test]
    fn the_embedded_catalog_has_at_least_ten_books_per_category_and_unique_ids() {
        let catalog = Catalog::embedded().unwrap();
        let mut ids = HashSet::new();
        for category in Category::ALL {
            let books = catalog.books(category);
            assert!(books.len() >= 10, "{category}: {}", books.len());
            for book in books {
                assert_eq!(book.category, category);
                assert!(ids.insert(book.id), "duplicate id {}", book.id);
            }
        }
    }

    #[test]
    fn a_duplicate_id_is_rejected_naming_the_file_and_the_id() {
        let err = load_err(
            r#"[{"id": 7, "category": "mystery", "title": "A"},
                {"id": 7, "category": "self_help", "title": "B"}]"#,
        );
        assert!(err.contains("books.json"), "{err}");
        assert!(err.contains("book id 7 appears more than once"), "{err}");
    }

    #[test]
    fn an_empty_or_blank_title_is_rejected_naming_the_id() {
        for title in ["", "   "] {
            let json = format!(r#"[{{"id": 4, "category": "mystery", "title": "{title}"}}]"#);
            let err = load_err(&json);
            assert!(err.contains("books.json"), "{err}");
            assert!(err.contains("book 4 has an empty title"), "{err}");
        }
    }

    #[test]
    fn an_unknown_category_is_rejected_with_its_line_and_column() {
        let err = load_err(
            "[\n  {\"id\": 1, \"category\": \"mystery\", \"title\": \"A\"},\n  \
             {\"id\": 2, \"category\": \"romance\", \"title\": \"B\"}\n]",
        );
        assert!(err.contains("books.json"), "{err}");
        assert!(err.contains("unknown variant `romance`"), "{err}");
        assert!(err.contains("line 3 column"), "{err}");
    }

    #[test]
    fn malformed_json_is_rejected_with_its_line_number() {
        let err = load_err("[\n  {\"id\": 1, \"category\": \"mystery\", \"title\": \"A\"}\n  {\n]");
        assert!(err.contains("books.json"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn an_unknown_field_is_rejected() {
        let err = load_err(r#"[{"id": 1, "category": "mystery", "titel": "A"}]"#);
        assert!(err.contains("unknown field `titel`"), "{err}");
    }

    #[test]
    fn a_missing_file_is_rejected_naming_the_file() {
        let path = Path::new("/nonexistent/catalog.json");
        let err = Catalog::load(Some(path)).unwrap_err();
        assert!(matches!(err, CatalogError::Unreadable { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("cannot read catalog /nonexistent/catalog.json: "),
            "{err}"
        );
    }

    #[test]
    fn a_category_without_books_is_allowed_and_empty() {
        let catalog = Catalog::from_json(
            "books.json",
            r#"[{"id": 1, "category": "mystery", "title": "A"}]"#,
        )
        .unwrap();
        assert_eq!(catalog.books(Category::Mystery).len(), 1);
        assert!(catalog.books(Category::SelfHelp).is_empty());
    }
}
