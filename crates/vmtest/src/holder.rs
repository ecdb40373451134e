//! `kern2usr-vmtest hold-eventfds`: a listener process that only holds its
//! two eventfds (inheritable, no CLOEXEC), optionally shares them with a
//! forked child (`sleep`), prints what it holds and waits to be killed.
//! The regression suite uses it for the ptrace check (run as another user)
//! and for a listener that forked before it died.

use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use rustix::event::{eventfd, EventfdFlags};
use rustix::process::getpid;

/// The line it prints once ready; `<n>` fields in this order.
pub const READY_LINE: &str = "holding efd=<n> efd2=<n> pid=<n> child=<n>";

/// Hold two eventfds until killed; with `fork`, a `sleep` child holds them too.
pub fn run(fork: bool) -> Result<()> {
    let efd = eventfd(0, EventfdFlags::empty()).context("eventfd")?;
    let efd2 = eventfd(0, EventfdFlags::empty()).context("eventfd")?;
    let child = if fork {
        // Not CLOEXEC: the child inherits both eventfds.
        // Its stdout/stderr are not the pipes the test reads this process by.
        let child = Command::new("sleep")
            .arg("3600")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the child that shares the eventfds")?;
        child.id()
    } else {
        0
    };
    println!(
        "holding efd={} efd2={} pid={} child={child}",
        efd.as_raw_fd(),
        efd2.as_raw_fd(),
        getpid().as_raw_nonzero()
    );
    loop {
        std::thread::park();
    }
}
