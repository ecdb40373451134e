//! The workspace's `rust-version` is its true minimum: the check that
//! `cargo xtask test` runs with the host tests.
//!
//! Three parts, each catching what the others cannot:
//! - clippy's `incompatible_msrv` lint over the whole workspace flags any
//!   standard-library item (or `const` use of one) newer than
//!   `rust-version`, with the toolchain this machine has;
//! - every package the workspace resolves to declares a `rust-version` no
//!   newer than ours (a dependency cannot raise our minimum unnoticed);
//! - when rustup has (or can install) a toolchain of exactly that
//!   version, `rustup run V cargo check` builds the library with it
//!   (language features the lint cannot see).

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::util::{describe, repo_root, say};

/// A `major.minor[.patch]` version, compared numerically.
type Version = (u64, u64, u64);

fn parse_version(text: &str) -> Option<Version> {
    let mut parts = text.trim().split('.').map(|p| p.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next().unwrap_or(Some(0))?;
    let patch = parts.next().unwrap_or(Some(0))?;
    parts.next().is_none().then_some((major, minor, patch))
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()))
}

/// The workspace's `rust-version` and the packages (name, version,
/// rust-version) that declare a newer one.
fn newer_dependencies() -> Result<(Version, Vec<String>)> {
    let mut c = cargo();
    c.args(["metadata", "--format-version", "1", "--all-features"])
        .current_dir(repo_root());
    let out = c
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not run {}", describe(&c)))?;
    if !out.status.success() {
        bail!("{} exited with {}", describe(&c), out.status);
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata printed no JSON")?;
    let rust_version = |p: &serde_json::Value| {
        p.get("rust_version")
            .and_then(|v| v.as_str())
            .and_then(parse_version)
    };
    let packages = meta["packages"].as_array().cloned().unwrap_or_default();
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .map(|m| m.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let ours = packages
        .iter()
        .filter(|p| members.contains(&p["id"].as_str().unwrap_or("")))
        .filter_map(rust_version)
        .min()
        .context("no workspace member declares rust-version")?;
    // Only what the resolver picked for this workspace, not every
    // version cargo happens to know of.
    let resolved: Vec<&str> = meta["resolve"]["nodes"]
        .as_array()
        .map(|n| n.iter().filter_map(|v| v["id"].as_str()).collect())
        .unwrap_or_default();
    let newer = packages
        .iter()
        .filter(|p| resolved.contains(&p["id"].as_str().unwrap_or("")))
        .filter(|p| rust_version(p).is_some_and(|v| v > ours))
        .map(|p| {
            format!(
                "{} {} (rust-version {})",
                p["name"].as_str().unwrap_or("?"),
                p["version"].as_str().unwrap_or("?"),
                p["rust_version"].as_str().unwrap_or("?")
            )
        })
        .collect();
    Ok((ours, newer))
}

/// Whether rustup has the toolchain `name` installed.
fn rustup_has(name: &str) -> bool {
    Command::new("rustup")
        .args(["toolchain", "list"])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout).lines().any(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|t| t.starts_with(name))
            })
        })
}

/// Ask rustup for the minimal profile of toolchain `name`; false when
/// it cannot (no rustup, no network to its server).
fn rustup_install(name: &str) -> bool {
    let mut c = Command::new("rustup");
    c.args(["toolchain", "install", name, "--profile", "minimal"]);
    say(format!("host: {}", describe(&c)));
    c.stdin(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Run the check; `Some(reason)` if it failed.
pub fn check() -> Result<Option<String>> {
    let (ours, newer) = newer_dependencies()?;
    let ours_text = format!("{}.{}", ours.0, ours.1);
    if !newer.is_empty() {
        return Ok(Some(format!(
            "rust-version {ours_text}, but these need a newer Rust: {}",
            newer.join(", ")
        )));
    }
    say(format!(
        "host: no resolved dependency needs more than Rust {ours_text}"
    ));

    let mut c = cargo();
    c.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--no-deps",
        "--quiet",
        "--",
        "-D",
        "clippy::incompatible_msrv",
    ])
    .current_dir(repo_root());
    say(format!("host: {}", describe(&c)));
    let status = c
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("could not run {}", describe(&c)))?;
    if !status.success() {
        return Ok(Some(format!(
            "clippy found code that needs a Rust newer than rust-version {ours_text}"
        )));
    }

    if rustup_has(&ours_text) || rustup_install(&ours_text) {
        // Through rustup: the cargo that runs xtask is a toolchain's own
        // binary, which does not understand `+toolchain`.
        let mut c = Command::new("rustup");
        c.args(["run", &ours_text, "cargo", "check", "-p", "kern2usr"])
            .args(["--all-features", "--quiet"])
            // What the outer cargo set would pick the newer compiler.
            .env_remove("RUSTC")
            .env_remove("RUSTDOC")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO")
            .current_dir(repo_root());
        say(format!("host: {}", describe(&c)));
        let status = c
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("could not run {}", describe(&c)))?;
        if !status.success() {
            return Ok(Some(format!(
                "the library does not build with Rust {ours_text}"
            )));
        }
    } else {
        say(format!(
            "host: no Rust {ours_text} toolchain from rustup: the build with it is skipped (the lint and the dependency check ran)"
        ));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(parse_version("1.87"), Some((1, 87, 0)));
        assert_eq!(parse_version("1.87.1"), Some((1, 87, 1)));
        assert!(parse_version("1.100") > parse_version("1.87"));
        assert_eq!(parse_version("1.x"), None);
        assert_eq!(parse_version("1.2.3.4"), None);
        assert_eq!(parse_version(""), None);
    }
}
