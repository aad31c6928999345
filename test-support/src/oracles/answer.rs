//! What docs/design.md's validation table says a Recommend request gets, as a
//! check of an answer. Used by the Recommend property and the fuzz target
//! `fuzz/fuzz_targets/validation.rs`.

use recommendations::catalog::{Catalog, Category};
use recommendations_proto::v1::{RecommendationRequest, RecommendationResponse};
use std::collections::HashSet;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The table's category numbers, written out rather than taken from the code under test.
fn category(number: i32) -> Option<Category> {
    match number {
        1 => Some(Category::Mystery),
        2 => Some(Category::ScienceFiction),
        3 => Some(Category::SelfHelp),
        _ => None,
    }
}

/// The fields of `request` the table calls invalid (none: a valid request).
fn invalid_fields(request: &RecommendationRequest) -> Vec<&'static str> {
    [
        (category(request.category).is_none(), "category"),
        (request.max_results < 0, "max_results"),
        (request.user_id < 0, "user_id"),
    ]
    .into_iter()
    .filter_map(|(bad, field)| bad.then_some(field))
    .collect()
}

/// Checks `answer` to `request` against the table, the books coming from `catalog`:
/// OK with the right number of distinct books of the asked category, or
/// INVALID_ARGUMENT with one field violation naming a field that is wrong.
pub fn check_answer(
    catalog: &Catalog,
    request: &RecommendationRequest,
    answer: Result<RecommendationResponse, Status>,
) -> Result<(), String> {
    let invalid = invalid_fields(request);
    match answer {
        Ok(response) => {
            let category = match category(request.category) {
                Some(category) if invalid.is_empty() => category,
                _ => {
                    return Err(format!(
                        "{request:?} is invalid ({invalid:?}) yet answered OK"
                    ));
                }
            };
            let asked = match request.max_results {
                0 => 3,
                n => usize::try_from(n.min(20)).expect("not negative"),
            };
            let shelf = catalog.books(category);
            let books = response.recommendations;
            if books.len() != asked.min(shelf.len()) {
                return Err(format!("{request:?} got {} books", books.len()));
            }
            let ids: HashSet<i32> = books.iter().map(|book| book.id).collect();
            if ids.len() != books.len() {
                return Err(format!("a book repeats: {books:?}"));
            }
            match books.iter().find(|book| {
                !shelf
                    .iter()
                    .any(|b| b.id == book.id && b.title == book.title)
            }) {
                Some(book) => Err(format!("{book:?} is not a {category} book")),
                None => Ok(()),
            }
        }
        Err(status) => {
            if status.code() != Code::InvalidArgument {
                return Err(format!("{request:?} answered {status:?}"));
            }
            let Some(bad_request) = status.get_details_bad_request() else {
                return Err(format!("no google.rpc.BadRequest detail: {status:?}"));
            };
            match bad_request.field_violations.as_slice() {
                [violation] if invalid.contains(&violation.field.as_str()) => Ok(()),
                violations => Err(format!(
                    "{request:?} rejected with {violations:?}, not one violation naming one of {invalid:?}"
                )),
            }
        }
    }
}
