//! With one target dir shared by two clones (as `.ci/run` shares one), the
//! xtask binary built in one clone runs in the other without a rebuild: it
//! must work on the tree it is run in, not on the one it was built in.

use std::{path::Path, process::Command};

/// One xtask binary (this crate's, built here), run in two fresh clones.
#[test]
fn one_xtask_binary_works_on_the_clone_it_runs_in() {
    // The clone this test runs in: cargo runs it in the package's folder. Not
    // `env!("CARGO_MANIFEST_DIR")`: this test binary is reused from the shared
    // target dir too, and would clone the tree it was built in, maybe gone.
    let here = std::env::current_dir().unwrap();
    let source = here.parent().unwrap();
    let scratch = std::env::temp_dir().join(format!("xtask-two-clones-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    for clone in ["first", "second"] {
        let dir = scratch.join(clone);
        let cloned = Command::new("git")
            .args(["clone", "--quiet", "--depth", "1"])
            .arg(format!("file://{}", source.display()))
            .arg(&dir)
            .status()
            .expect("git runs");
        assert!(cloned.success(), "git clone of {} failed", source.display());
        // A folder inside the clone, as `cargo xtask` is often run from one.
        let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .arg("where")
            .current_dir(dir.join("xtask"))
            .output()
            .expect("xtask runs");
        assert!(output.status.success(), "{output:?}");
        let root = String::from_utf8(output.stdout).unwrap();
        assert_eq!(Path::new(root.trim()), dir.canonicalize().unwrap());
    }
    std::fs::remove_dir_all(&scratch).unwrap();
}
