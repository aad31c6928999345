//! What an input from outside must get, written as checks of an answer: each
//! is shared by a proptest property on stable (recommendations/tests/api/properties.rs,
//! marketplace/tests/api/properties.rs) and a fuzz target (fuzz/fuzz_targets/).

pub mod answer;
pub mod catalog;
pub mod page;
