//! What loading any catalog text must give: a catalog whose every book of the
//! file sits, once and titled, on its own shelf, or an error naming the file.
//! Used by the catalog properties and the fuzz target
//! `fuzz/fuzz_targets/catalog.rs`.

use recommendations::catalog::{Catalog, CatalogError, Category};
use std::collections::HashSet;

/// Checks the result of `Catalog::from_json(origin, json)`.
pub fn check_catalog(
    origin: &str,
    json: &str,
    loaded: &Result<Catalog, CatalogError>,
) -> Result<(), String> {
    match loaded {
        Ok(catalog) => {
            let entries = serde_json::from_str::<serde_json::Value>(json)
                .ok()
                .and_then(|value| value.as_array().map(Vec::len))
                .ok_or_else(|| {
                    format!("loaded a catalog from text that is no JSON array: {json:?}")
                })?;
            let mut ids = HashSet::new();
            for category in Category::ALL {
                for book in catalog.books(category) {
                    if book.category != category {
                        return Err(format!("{book:?} is on the {category} shelf"));
                    }
                    if !ids.insert(book.id) {
                        return Err(format!("book id {} is loaded twice", book.id));
                    }
                    if book.title.trim().is_empty() {
                        return Err(format!("{book:?} has no title"));
                    }
                }
            }
            if ids.len() != entries {
                return Err(format!(
                    "{entries} books in the file, {} on the shelves",
                    ids.len()
                ));
            }
            Ok(())
        }
        Err(err) => {
            let message = err.to_string();
            if message.starts_with(&format!("invalid catalog {origin}: ")) {
                Ok(())
            } else {
                Err(format!("the error does not name the file: {message}"))
            }
        }
    }
}
