//! Properties of the page's query string, checked on stable Rust: any query,
//! sent over real HTTP to a marketplace on port 0 (recommendations faked: the
//! other side of the boundary), gets the page docs/design.md promises. The
//! fuzz target `fuzz/fuzz_targets/query.rs` explores the same input with
//! coverage guidance and the same check (`bookshop_test_support::oracles::page`).
//! `PROPTEST_CASES` sets the number of cases (256 by default).

use crate::helpers::{get_page, spawn_app};
use bookshop_test_support::oracles::page::check_page;
use proptest::{prelude::*, sample::select};
use std::fmt::Write;

/// `text` percent-encoded but for unreserved characters, as a form would send it.
fn encode(text: &str) -> String {
    text.bytes().fold(String::new(), |mut encoded, byte| {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte.into());
        } else {
            write!(encoded, "%{byte:02X}").expect("writing to a String");
        }
        encoded
    })
}

/// A parameter: mostly `category`, its value mostly a slug.
fn parameter() -> impl Strategy<Value = (String, String)> {
    let key = prop_oneof![
        4 => Just("category".to_owned()),
        1 => Just("utm_source".to_owned()),
        1 => any::<String>(),
    ];
    let value = prop_oneof![
        4 => select(vec!["mystery", "science_fiction", "self_help"]).prop_map(str::to_owned),
        1 => select(vec!["Mystery", "", "self help", "mystery "]).prop_map(str::to_owned),
        2 => any::<String>(),
    ];
    (key, value)
}

fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(parameter(), 0..4).prop_map(|parameters| {
            parameters
                .iter()
                .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
                .collect::<Vec<_>>()
                .join("&")
        }),
        // Raw text, as a hand-typed URL or a bot may send it.
        "[a-z_=&%+0-9A-F;#?/ ]{0,40}",
    ]
}

#[test]
fn any_query_gets_the_page_of_its_category_or_the_400_page() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = runtime.block_on(spawn_app());
    proptest!(|(query in query())| {
        let url = reqwest::Url::parse(&format!("{}/?{query}", app.http_url)).unwrap();
        // What goes on the wire: the URL parser encodes spaces and drops a #fragment.
        let sent = url.query().unwrap_or_default().to_owned();
        let (status, html) = runtime.block_on(get_page(url.as_str()));
        check_page(&sent, status.as_u16(), &html).map_err(TestCaseError::fail)?;
    });
}
