//! `cargo xtask build-module` and `cargo xtask build-user`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::kernels::Unpacked;
use crate::util::{create_dir, describe, remove_dir_if_exists, repo_root, run, say, target_dir};

/// Name of the module file kbuild produces.
pub const MODULE_FILE: &str = "kern2usr.ko";
/// The sample producer module the C module's Kbuild builds beside it.
pub const SAMPLE_PRODUCER_FILE: &str = "k2u_sample_producer.ko";
/// Files of `kernel/c/` that the Rust module's Kbuild builds with, through
/// `../c/`: the producer API's header (its `exports.c` exports the API) and
/// the sample producer (built beside it, from the C module's source).
pub const RUST_FROM_C: &[&str] = &["include/kern2usr_producer.h", "k2u_sample_producer.c"];
/// Time limit of a module build (times `K2U_TIMEOUT_SCALE`).
const MAKE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10 * 60);
/// Rust target of the guest binaries.
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// The guest binaries (`cargo` package, binary name).
pub const GUEST_BINS: &[(&str, &str)] = &[
    ("kern2usr-cli", "kern2usr"),
    ("kern2usr-vmtest", "kern2usr-vmtest"),
];

/// Whether `name` in the module source directory is a source file (not a
/// build product left by an in-tree `make`).
pub fn is_module_source(name: &str) -> bool {
    let products = [
        ".o", ".ko", ".mod", ".mod.c", ".cmd", ".order", ".symvers", ".a", ".tmp",
    ];
    if name.starts_with('.') || products.iter().any(|p| name.ends_with(p)) {
        return false;
    }
    matches!(name, "Kbuild" | "Makefile")
        || [".c", ".h", ".S", ".rs"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

/// Lines of a kbuild log that are compiler or modpost warnings.
pub fn warning_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.to_ascii_lowercase().contains("warning:"))
        .collect()
}

/// Copies the module sources of `src` (files [`is_module_source`] accepts,
/// or `also` does) and the headers of its `include/` to `out` (which must
/// exist). Returns the copied names (`include/<h>` for headers), sorted.
pub fn copy_sources(src: &Path, out: &Path, also: fn(&str) -> bool) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut copy_dir = |from: &Path, to: &Path, prefix: &str| -> Result<()> {
        for entry in
            std::fs::read_dir(from).with_context(|| format!("could not list {}", from.display()))?
        {
            let entry = entry.with_context(|| format!("could not list {}", from.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.file_type().is_ok_and(|t| t.is_file())
                || !(is_module_source(&name) || also(&name))
            {
                continue;
            }
            std::fs::copy(entry.path(), to.join(&name)).with_context(|| {
                format!(
                    "could not copy {} to {}",
                    entry.path().display(),
                    to.display()
                )
            })?;
            names.push(format!("{prefix}{name}"));
        }
        Ok(())
    };
    copy_dir(src, out, "")?;
    // Headers for other modules (kernel/c/include/: the producer API).
    let include = src.join("include");
    if include.is_dir() {
        let to = out.join("include");
        create_dir(&to)?;
        copy_dir(&include, &to, "include/")?;
    }
    names.sort();
    Ok(names)
}

/// Copies `kernel/<module>/` sources to `target/kmod/<module>-<series>/` and
/// builds them against `kernel`'s headers. Returns the `.ko` path.
pub fn build_module(kernel: &Unpacked, module: &str) -> Result<PathBuf> {
    let src = repo_root().join("kernel").join(module);
    if !src.is_dir() {
        bail!(
            "no module sources in {} (expected for --module {module})",
            src.display()
        );
    }
    // The copy keeps the repo's shape (kernel/<m>/ beside abi/src/defs.rs),
    // so the Rust module's `#[path = "../../abi/src/defs.rs"]` resolves.
    let root = target_dir()
        .join("kmod")
        .join(format!("{module}-{}", kernel.kernel.series));
    let out = root.join("kernel").join(module);
    say(format!(
        "module {module}: copying sources from {} to {}",
        src.display(),
        out.display()
    ));
    remove_dir_if_exists(&root)?;
    create_dir(&out)?;
    let abi_dir = root.join("abi").join("src");
    create_dir(&abi_dir)?;
    let defs = repo_root().join("abi/src/defs.rs");
    std::fs::copy(&defs, abi_dir.join("defs.rs"))
        .with_context(|| format!("could not copy {}", defs.display()))?;
    let copied = copy_sources(&src, &out, |_| false)?.len();
    if module == "rust" {
        for rel in RUST_FROM_C {
            let from = repo_root().join("kernel/c").join(rel);
            let to = root.join("kernel/c").join(rel);
            if let Some(dir) = to.parent() {
                create_dir(dir)?;
            }
            std::fs::copy(&from, &to)
                .with_context(|| format!("could not copy {}", from.display()))?;
        }
    }
    if !out.join("Kbuild").exists() && !out.join("Makefile").exists() {
        bail!(
            "{} has no Kbuild or Makefile ({copied} source files copied)",
            src.display()
        );
    }
    make_in(kernel, &out, module)?;
    let ko = out.join(MODULE_FILE);
    if !ko.exists() {
        bail!(
            "make succeeded but {} is missing; does kernel/{module}/Kbuild build {MODULE_FILE}?",
            ko.display()
        );
    }
    say(format!("module {module}: built {}", ko.display()));
    Ok(ko)
}

/// Runs kbuild in `out` against `kernel`'s headers; fails on a failed
/// build or any warning. The log goes to `out/build.log`.
fn make_in(kernel: &Unpacked, out: &Path, module: &str) -> Result<()> {
    let mut make = kernel.make_command(out);
    say(format!("module {module}: {}", describe(&make)));
    let output = crate::util::output_timeout(&mut make, MAKE_LIMIT)
        .with_context(|| "could not build the module; run `cargo xtask deps`".to_string())?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let log_path = out.join("build.log");
    std::fs::write(&log_path, &log)
        .with_context(|| format!("could not write {}", log_path.display()))?;
    if !output.status.success() {
        print!("{log}");
        bail!(
            "building the {module} module for {} failed ({}); log in {}",
            kernel.kernel.release(),
            output.status,
            log_path.display()
        );
    }
    let warnings = warning_lines(&log);
    if !warnings.is_empty() {
        print!("{log}");
        bail!(
            "the {module} module builds with {} warning line(s) for {}; fix them:\n{}",
            warnings.len(),
            kernel.kernel.release(),
            warnings.join("\n")
        );
    }
    Ok(())
}

/// The bench peers' module (kernel/peers/, `cargo xtask bench` only).
pub const PEERS_MODULE_FILE: &str = "k2u_bench_peers.ko";
/// Files of `kernel/c/` the peers' module builds with, copied beside it.
pub const PEERS_FROM_C: &[&str] = &["kern2usr_abi.h"];

/// Copies `kernel/peers/` (and [`PEERS_FROM_C`]) to
/// `target/kmod/peers-<series>/` and builds it against `kernel`'s headers.
/// Returns the `.ko` path.
pub fn build_peers(kernel: &Unpacked) -> Result<PathBuf> {
    let src = repo_root().join("kernel/peers");
    let out = target_dir()
        .join("kmod")
        .join(format!("peers-{}", kernel.kernel.series));
    say(format!(
        "module peers: copying sources from {} to {}",
        src.display(),
        out.display()
    ));
    remove_dir_if_exists(&out)?;
    create_dir(&out)?;
    copy_sources(&src, &out, |_| false)?;
    for name in PEERS_FROM_C {
        let from = repo_root().join("kernel/c").join(name);
        std::fs::copy(&from, out.join(name))
            .with_context(|| format!("could not copy {}", from.display()))?;
    }
    make_in(kernel, &out, "peers")?;
    let ko = out.join(PEERS_MODULE_FILE);
    if !ko.exists() {
        bail!("make succeeded but {} is missing", ko.display());
    }
    say(format!("module peers: built {}", ko.display()));
    Ok(ko)
}

/// Paths of the static guest binaries.
pub struct UserBins {
    /// `kern2usr`, the CLI.
    pub kern2usr: PathBuf,
    /// `kern2usr-vmtest`, the in-VM suites.
    pub vmtest: PathBuf,
    /// `seed-client`, the 2017 client's calls in C (tests/seed-client/).
    pub seed_client: PathBuf,
}

/// Source of the seed client, relative to the repository root.
pub const SEED_CLIENT_SOURCE: &str = "tests/seed-client/seed_client.c";

/// Builds the seed client, static, with the host's C compiler.
fn build_seed_client() -> Result<PathBuf> {
    let out = target_dir().join("guest").join("seed-client");
    let mut c = Command::new("cc");
    c.args(["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&out)
        .arg(repo_root().join(SEED_CLIENT_SOURCE));
    say(format!("user: {}", describe(&c)));
    run(&mut c).context("building the seed client failed (needs gcc and libc6-dev)")?;
    ensure_static(&out)?;
    Ok(out)
}

/// Where `build_user` puts its binaries.
pub fn guest_release_dir() -> PathBuf {
    target_dir()
        .join("guest")
        .join(GUEST_TARGET)
        .join("release")
}

/// Builds the static guest binaries.
pub fn build_user() -> Result<UserBins> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut c = Command::new(cargo);
    c.args(["build", "--release", "--target", GUEST_TARGET])
        .current_dir(repo_root())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", target_dir().join("guest"));
    for (pkg, _) in GUEST_BINS {
        c.args(["-p", pkg]);
    }
    say(format!(
        "user: RUSTFLAGS=\"-C target-feature=+crt-static\" CARGO_TARGET_DIR=target/guest {}",
        describe(&c)
    ));
    run(&mut c).context("building the guest binaries failed (see cargo's output above)")?;
    let dir = guest_release_dir();
    let mut paths = Vec::new();
    for (_, bin) in GUEST_BINS {
        let path = dir.join(bin);
        if !path.exists() {
            bail!(
                "cargo built but {} is missing; does the package define a `{bin}` binary?",
                path.display()
            );
        }
        ensure_static(&path)?;
        paths.push(path);
    }
    say(format!("user: static binaries in {}", dir.display()));
    let mut it = paths.into_iter();
    match (it.next(), it.next()) {
        (Some(kern2usr), Some(vmtest)) => Ok(UserBins {
            kern2usr,
            vmtest,
            seed_client: build_seed_client()?,
        }),
        _ => bail!("internal: expected two guest binaries"),
    }
}

/// Fails unless `path` is an ELF file without a program interpreter.
pub fn ensure_static(path: &Path) -> Result<()> {
    let bytes =
        std::fs::read(path).with_context(|| format!("could not read {}", path.display()))?;
    match elf_interpreter(&bytes) {
        Ok(None) => Ok(()),
        Ok(Some(interp)) => bail!(
            "{} is dynamically linked (interpreter {interp}); the guest has no libc: build with -C target-feature=+crt-static",
            path.display()
        ),
        Err(e) => Err(e.context(format!("{} is not a usable ELF file", path.display()))),
    }
}

/// The `PT_INTERP` path of a little-endian ELF64 file, if it has one.
pub fn elf_interpreter(bytes: &[u8]) -> Result<Option<String>> {
    let u16_at = |o: usize| -> Result<u64> {
        let b = bytes.get(o..o + 2).context("truncated ELF")?;
        Ok(u64::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u32_at = |o: usize| -> Result<u64> {
        let b = bytes.get(o..o + 4).context("truncated ELF")?;
        Ok(u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
    };
    let u64_at = |o: usize| -> Result<u64> {
        let b = bytes.get(o..o + 8).context("truncated ELF")?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    };
    let usize_of = |v: u64| usize::try_from(v).context("ELF offset out of range");
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
        bail!("no ELF magic");
    }
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        bail!("not a little-endian 64-bit ELF");
    }
    let phoff = usize_of(u64_at(0x20)?)?;
    let phentsize = usize_of(u16_at(0x36)?)?;
    let phnum = usize_of(u16_at(0x38)?)?;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph)? == 3 {
            let off = usize_of(u64_at(ph + 8)?)?;
            let size = usize_of(u64_at(ph + 32)?)?;
            let raw = bytes
                .get(off..off + size)
                .context("PT_INTERP outside the file")?;
            let text = String::from_utf8_lossy(raw)
                .trim_end_matches('\0')
                .to_string();
            return Ok(Some(text));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_only() {
        for yes in [
            "kern2usr.c",
            "kern2usr_abi.h",
            "Kbuild",
            "Makefile",
            "entry.S",
        ] {
            assert!(is_module_source(yes), "{yes}");
        }
        for no in [
            "kern2usr.o",
            "kern2usr.ko",
            "kern2usr.mod",
            "kern2usr.mod.c",
            ".kern2usr.o.cmd",
            "modules.order",
            "Module.symvers",
            "README.md",
        ] {
            assert!(!is_module_source(no), "{no}");
        }
    }

    #[test]
    fn warnings_are_found() {
        let log = "  CC [M]  /x/kern2usr.o\n/x/kern2usr.c:10:5: warning: unused variable 'a' [-Wunused-variable]\n  MODPOST /x/Module.symvers\nWARNING: modpost: missing MODULE_LICENSE() in /x/kern2usr.o\n  LD [M]  /x/kern2usr.ko\n";
        assert_eq!(warning_lines(log).len(), 2);
        assert!(warning_lines("  CC [M]  /x/no_warnings_here.o\n").is_empty());
    }

    fn elf_with_interp(interp: Option<&str>) -> Vec<u8> {
        let mut b = vec![0u8; 0x40 + 56 + 32];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let ptype: u32 = if interp.is_some() { 3 } else { 1 };
        b[0x40..0x44].copy_from_slice(&ptype.to_le_bytes());
        let text = interp.unwrap_or("");
        let off = 0x40 + 56;
        b[0x48..0x50].copy_from_slice(&(off as u64).to_le_bytes());
        b[0x60..0x68].copy_from_slice(&(text.len() as u64 + 1).to_le_bytes());
        b[off..off + text.len()].copy_from_slice(text.as_bytes());
        b
    }

    #[test]
    fn interpreter_detection() {
        let dynamic = elf_with_interp(Some("/lib64/ld-linux-x86-64.so.2"));
        assert_eq!(
            elf_interpreter(&dynamic).expect("parses").as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert_eq!(
            elf_interpreter(&elf_with_interp(None)).expect("parses"),
            None
        );
        assert!(elf_interpreter(b"#!/bin/sh\n").is_err());
    }
}
