//! BENCHMARKS.md's generated sections: each between two markers that name
//! the command writing it, everything around them left as people wrote it.

use anyhow::Context;
use std::{fs, path::Path};

/// Rewrites `document`'s section of `command` with what `body` makes of its content ("" when
/// there is none yet: then it is appended after `intro`, the document created if need be).
pub fn splice(
    document: &str,
    command: &str,
    intro: &str,
    body: impl FnOnce(&str) -> String,
) -> String {
    let begin = format!("<!-- cargo xtask {command}: begin -->");
    let end = format!("<!-- cargo xtask {command}: end -->");
    match (document.find(&begin), document.find(&end)) {
        (Some(first), Some(last)) if first < last => {
            let old = document[first + begin.len()..last].trim_start_matches('\n');
            let (head, tail) = (&document[..first], &document[last..]);
            format!("{head}{begin}\n{}{tail}", body(old))
        }
        _ => {
            let before = match document.trim_end() {
                "" => "# Benchmarks",
                text => text,
            };
            format!("{before}\n\n{intro}{begin}\n{}{end}\n", body(""))
        }
    }
}

pub fn update(
    path: &Path,
    command: &str,
    intro: &str,
    body: impl FnOnce(&str) -> String,
) -> anyhow::Result<()> {
    let document = fs::read_to_string(path).unwrap_or_default();
    let written = fs::write(path, splice(&document, command, intro, body));
    written.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splicing_replaces_only_what_is_between_the_markers() {
        let first = splice("# Benchmarks\n", "bench", "", |_| "table 1\n".into());
        assert!(first.starts_with("# Benchmarks\n"));
        let second = splice(&format!("{first}\nprose after\n"), "bench", "", |old| {
            assert_eq!(old, "table 1\n");
            "table 2\n".into()
        });
        assert!(second.contains("table 2\n") && !second.contains("table 1"));
        assert!(second.starts_with("# Benchmarks\n") && second.ends_with("prose after\n"));
    }

    #[test]
    fn a_missing_section_is_appended_after_its_intro_and_a_missing_document_made() {
        let created = splice("", "soak", "## Soak\n\n", |_| "rows\n".into());
        assert_eq!(
            created,
            "# Benchmarks\n\n## Soak\n\n<!-- cargo xtask soak: begin -->\nrows\n<!-- cargo xtask soak: end -->\n"
        );
        let appended = splice("# Benchmarks\n\nbench text\n", "soak", "", |_| {
            String::new()
        });
        assert!(
            appended.starts_with("# Benchmarks\n\nbench text\n\n<!--"),
            "{appended}"
        );
    }
}
