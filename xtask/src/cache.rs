//! Where downloaded kernels and the private apt state live.
//!
//! `$KERN2USR_CACHE`, else `$XDG_CACHE_HOME/kern2usr`, else
//! `~/.cache/kern2usr`: outside the repository so `cargo clean` and fresh
//! clones keep it.

use std::path::PathBuf;

use anyhow::{bail, Result};

/// Resolves the cache directory from the environment.
pub fn cache_dir() -> Result<PathBuf> {
    let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
    resolve(var("KERN2USR_CACHE"), var("XDG_CACHE_HOME"), var("HOME"))
}

/// Pure part of [`cache_dir`]; empty values count as unset.
pub fn resolve(
    explicit: Option<PathBuf>,
    xdg_cache_home: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Result<PathBuf> {
    let set = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = set(explicit) {
        return Ok(dir);
    }
    // The XDG spec says relative values are invalid and must be ignored.
    if let Some(dir) = set(xdg_cache_home).filter(|p| p.is_absolute()) {
        return Ok(dir.join("kern2usr"));
    }
    if let Some(home) = set(home) {
        return Ok(home.join(".cache").join("kern2usr"));
    }
    bail!("no cache directory: set KERN2USR_CACHE (or XDG_CACHE_HOME or HOME)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<PathBuf> {
        Some(PathBuf::from(s))
    }

    #[test]
    fn explicit_wins() {
        let dir = resolve(p("/c"), p("/x"), p("/h")).expect("resolves");
        assert_eq!(dir, PathBuf::from("/c"));
    }

    #[test]
    fn xdg_then_home() {
        let dir = resolve(None, p("/x"), p("/h")).expect("resolves");
        assert_eq!(dir, PathBuf::from("/x/kern2usr"));
        let dir = resolve(p(""), p(""), p("/h")).expect("resolves");
        assert_eq!(dir, PathBuf::from("/h/.cache/kern2usr"));
        let dir = resolve(None, p("relative"), p("/h")).expect("resolves");
        assert_eq!(dir, PathBuf::from("/h/.cache/kern2usr"));
    }

    #[test]
    fn nothing_set_is_an_error() {
        assert!(resolve(None, None, None).is_err());
    }
}
