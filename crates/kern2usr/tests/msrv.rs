//! The workspace's `rust-version` states the true minimum: the sources use
//! `is_multiple_of` on unsigned integers, stable since Rust 1.87, so the
//! stated minimum must be at least that, and every package inherits it.

use std::fs;
use std::path::{Path, PathBuf};

/// The first Rust release with `uN::is_multiple_of`.
const IS_MULTIPLE_OF_SINCE: (u32, u32) = (1, 87);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `rust-version` of `[workspace.package]` as (major, minor).
fn workspace_rust_version(manifest: &str) -> Option<(u32, u32)> {
    let mut in_section = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[workspace.package]";
            continue;
        }
        if !in_section {
            continue;
        }
        let Some(value) = line.strip_prefix("rust-version") else {
            continue;
        };
        let value = value.trim().strip_prefix('=')?.trim().trim_matches('"');
        let mut parts = value.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        return Some((major, minor));
    }
    None
}

fn sources_use_is_multiple_of(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            path.file_name().is_some_and(|n| n != "target") && sources_use_is_multiple_of(&path)
        } else {
            path.extension().is_some_and(|x| x == "rs")
                && fs::read_to_string(&path).is_ok_and(|s| s.contains(".is_multiple_of("))
        }
    })
}

#[test]
fn parser_reads_only_the_workspace_package_section() {
    let text = "[package]\nrust-version = \"1.60\"\n[workspace.package]\nedition = \"2021\"\nrust-version = \"1.87\"\n";
    assert_eq!(workspace_rust_version(text), Some((1, 87)));
    assert_eq!(
        workspace_rust_version("[package]\nrust-version = \"1.60\"\n"),
        None
    );
}

#[test]
fn workspace_rust_version_covers_is_multiple_of() {
    let root = workspace_root();
    let manifest = fs::read_to_string(root.join("Cargo.toml")).expect("workspace Cargo.toml");
    let stated = workspace_rust_version(&manifest).expect("[workspace.package] rust-version");
    assert!(
        sources_use_is_multiple_of(&root.join("abi/src")),
        "the ABI no longer uses is_multiple_of: re-check the minimum"
    );
    assert!(
        stated >= IS_MULTIPLE_OF_SINCE,
        "rust-version {}.{} is below {}.{}, which is_multiple_of needs",
        stated.0,
        stated.1,
        IS_MULTIPLE_OF_SINCE.0,
        IS_MULTIPLE_OF_SINCE.1
    );
}

#[test]
fn every_published_package_inherits_the_rust_version() {
    let root = workspace_root();
    for pkg in ["abi", "crates/kern2usr", "crates/cli"] {
        let text = fs::read_to_string(root.join(pkg).join("Cargo.toml")).expect("package manifest");
        assert!(
            text.lines()
                .any(|l| l.trim() == "rust-version.workspace = true"),
            "{pkg}/Cargo.toml does not inherit rust-version"
        );
    }
}
