//! What `GET /?<query>` must answer, per docs/design.md: the page of the
//! category the query names (mystery when none), three books on it, or the
//! 400 "Unknown category" page when `category` repeats or is not one of the
//! three. Used by the query property and the fuzz target
//! `fuzz/fuzz_targets/query.rs`.

/// The heading a query's page has, or `None` for the 400 page. The query is
/// decoded with `form_urlencoded`, independently of the marketplace, and the
/// slugs are written out.
fn expected_heading(query: &str) -> Option<&'static str> {
    let mut named = form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == "category")
        .map(|(_, value)| value);
    match (named.next(), named.next()) {
        (None, _) => Some("Mystery"),
        (Some(slug), None) => match slug.as_ref() {
            "mystery" => Some("Mystery"),
            "science_fiction" => Some("Science fiction"),
            "self_help" => Some("Self-help"),
            _ => None,
        },
        (Some(_), Some(_)) => None,
    }
}

/// Checks the answer (`status`, `html`) to `GET /?<query>`, `query` as the
/// server received it.
pub fn check_page(query: &str, status: u16, html: &str) -> Result<(), String> {
    let items = html.matches("<li").count();
    match expected_heading(query) {
        Some(label) => {
            let heading = format!("<h1>{label} books you may like</h1>");
            if status != 200 || !html.contains(&heading) || items != 3 {
                return Err(format!(
                    "{query:?}: expected a 200 page with {heading} and 3 books, got {status} with {items} items"
                ));
            }
        }
        None => {
            if status != 400 || !html.contains("Unknown category") || items != 0 {
                return Err(format!(
                    "{query:?}: expected the 400 Unknown category page, got {status} with {items} items"
                ));
            }
        }
    }
    Ok(())
}
