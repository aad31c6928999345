//! Properties of what comes from outside, checked on stable Rust: any
//! Recommend request over real gRPC, any catalog text. The fuzz targets in
//! `fuzz/` explore the same inputs with coverage guidance, with the same
//! checks (`bookshop_test_support::oracles`). `PROPTEST_CASES` sets the
//! number of cases (256 by default).

use crate::helpers::spawn_app;
use bookshop_test_support::oracles::{answer::check_answer, catalog::check_catalog};
use proptest::{prelude::*, sample::select};
use recommendations::catalog::{Catalog, Category};
use recommendations_proto::v1::RecommendationRequest;
use serde_json::{Value, json};
use std::collections::HashSet;

/// Numbers at the validation table's edges, more often than chance would pick them.
fn field() -> impl Strategy<Value = i32> {
    prop_oneof![-3..=25, any::<i32>(), Just(i32::MIN), Just(i32::MAX)]
}

#[test]
fn every_request_over_grpc_is_answered_as_the_validation_table_says() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = runtime.block_on(spawn_app());
    let client = runtime.block_on(app.client());
    let catalog = Catalog::embedded().unwrap();
    proptest!(|(user_id in field(), category in field(), max_results in field())| {
        let request = RecommendationRequest { user_id, category, max_results };
        let answer = runtime
            .block_on(client.clone().recommend(request))
            .map(tonic::Response::into_inner);
        check_answer(&catalog, &request, answer).map_err(TestCaseError::fail)?;
    });
}

/// One book entry of a generated catalog file, right or wrong in known ways.
#[derive(Debug, Clone)]
struct Entry {
    /// `Ok`: an id that fits an i32; `Err`: a value that does not (too big, a fraction, text).
    id: Result<i32, Value>,
    category: &'static str,
    title: String,
    extra_field: bool,
    title_missing: bool,
}

impl Entry {
    fn json(&self) -> Value {
        let mut book = json!({
            "id": self.id.clone().map_or_else(|wrong| wrong, Value::from),
            "category": self.category,
        });
        if !self.title_missing {
            book["title"] = json!(self.title);
        }
        if self.extra_field {
            book["titel"] = json!("misspelt");
        }
        book
    }

    /// Whether the entry is a book at all (the parser's part of the checks).
    fn is_well_formed(&self) -> bool {
        self.id.is_ok()
            && ["mystery", "science_fiction", "self_help"].contains(&self.category)
            && !self.extra_field
            && !self.title_missing
    }
}

fn entry() -> impl Strategy<Value = Entry> {
    let id = prop_oneof![
        // A few ids, so that duplicates come up.
        12 => (-2..6).prop_map(Ok),
        1 => any::<i32>().prop_map(Ok),
        1 => Just(Err(json!(2_147_483_648_i64))),
        1 => Just(Err(json!(1.5))),
        1 => Just(Err(json!("7"))),
    ];
    let category = select(vec![
        "mystery",
        "science_fiction",
        "self_help",
        "romance",
        "Mystery",
    ]);
    let title = prop_oneof![
        8 => "[a-zA-Z][a-zA-Z &<>\"\\\\é\n]{0,11}",
        1 => Just(String::new()),
        1 => "[ \t\n]{1,3}",
    ];
    (
        id,
        category,
        title,
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.05),
    )
        .prop_map(|(id, category, title, extra_field, title_missing)| Entry {
            id,
            category,
            title,
            extra_field,
            title_missing,
        })
}

/// What loading `entries` must give: `Ok`, or the words the error must hold.
fn expected_load(entries: &[Entry]) -> Result<(), Vec<String>> {
    if !entries.iter().all(Entry::is_well_formed) {
        // serde_json's own message; that it names the file is checked for every error.
        return Err(vec![String::new()]);
    }
    let mut seen = HashSet::new();
    for entry in entries {
        let id = entry.id.clone().expect("well formed");
        let mut wrong = Vec::new();
        if !seen.insert(id) {
            wrong.push(format!("book id {id} appears more than once"));
        }
        if entry.title.trim().is_empty() {
            wrong.push(format!("book {id} has an empty title"));
        }
        // Either message is right for an entry wrong both ways.
        if !wrong.is_empty() {
            return Err(wrong);
        }
    }
    Ok(())
}

#[test]
fn a_generated_catalog_loads_exactly_its_books_or_fails_naming_the_file_and_the_book() {
    proptest!(|(entries in prop::collection::vec(entry(), 0..8))| {
        let json = Value::Array(entries.iter().map(Entry::json).collect()).to_string();
        let loaded = Catalog::from_json("generated.json", &json);
        check_catalog("generated.json", &json, &loaded).map_err(TestCaseError::fail)?;
        match (expected_load(&entries), loaded) {
            (Ok(()), Ok(catalog)) => {
                for category in Category::ALL {
                    let shelf: Vec<(i32, &str)> = catalog
                        .books(category)
                        .iter()
                        .map(|book| (book.id, book.title.as_str()))
                        .collect();
                    let expected: Vec<(i32, &str)> = entries
                        .iter()
                        .filter(|entry| entry.category == category.as_str())
                        .map(|entry| (entry.id.clone().unwrap(), entry.title.as_str()))
                        .collect();
                    prop_assert_eq!(shelf, expected, "the {} shelf", category);
                }
            }
            (Err(words), Err(err)) => {
                let message = err.to_string();
                prop_assert!(
                    words.iter().any(|word| message.contains(word.as_str())),
                    "{message:?} says none of {words:?}"
                );
            }
            (expected, loaded) => {
                prop_assert!(false, "expected {expected:?}, loaded {loaded:?}");
            }
        }
    });
}

#[test]
fn any_text_loads_as_a_catalog_or_fails_naming_the_file() {
    let text = prop_oneof![
        any::<String>(),
        // Text made of JSON's own characters reaches deeper into the parser.
        "[\\[\\]{}\",:0-9a-z_. -]{0,80}",
    ];
    proptest!(|(text in text)| {
        let loaded = Catalog::from_json("any.json", &text);
        check_catalog("any.json", &text, &loaded).map_err(TestCaseError::fail)?;
    });
}
