//! A catalog file's text through the catalog loader: never a panic; a catalog
//! whose every book sits on its own shelf, once, titled, or an error that
//! names the file (the check the proptest properties use too).

#![no_main]

use bookshop_test_support::oracles::catalog::check_catalog;
use libfuzzer_sys::fuzz_target;
use recommendations::catalog::Catalog;

const ORIGIN: &str = "fuzzed.json";

fuzz_target!(|text: &[u8]| {
    // Catalog::from_file reads text; bytes that are not UTF-8 fail there, unread.
    let Ok(json) = std::str::from_utf8(text) else {
        return;
    };
    let loaded = Catalog::from_json(ORIGIN, json);
    if let Err(wrong) = check_catalog(ORIGIN, json, &loaded) {
        panic!("{wrong}");
    }
});
