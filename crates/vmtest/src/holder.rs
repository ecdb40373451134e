//! `kern2usr-vmtest hold-eventfds`: a listener process that only holds its
//! two eventfds (inheritable, no CLOEXEC), optionally shares them with a
//! forked child (`sleep`), prints what it holds and waits to be killed.
//! The regression suite uses it for the ptrace check (run as another user),
//! for a listener that forked before it died, and (`--read`) for a listener
//! blocked in `read()` of the device when root attaches another process.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use rustix::event::{eventfd, EventfdFlags};
use rustix::process::getpid;

/// The line it prints once ready; `<n>` fields in this order.
pub const READY_LINE: &str = "holding efd=<n> efd2=<n> pid=<n> child=<n>";

/// With `--read`: the line printed once the device is open.
pub const READING_LINE: &str = "reading fd=<n> after SIGUSR1";

/// With `--read`: the line printed once `read()` of one record returned,
/// `<any>` being `errno <n>` or `<n> bytes: code=<c> round=<r>`.
pub const READ_LINE: &str = "read returned <any>";

/// Hold two eventfds until killed; with `fork`, a `sleep` child holds them
/// too. With `read`, once ready it waits for SIGUSR1 (sent when it is the
/// listener), then blocks in `read()` of one record from the device and
/// prints [`READ_LINE`].
pub fn run(fork: bool, read: bool) -> Result<()> {
    if read {
        block_sigusr1()?;
    }
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
    if read {
        let mut dev =
            std::fs::File::open(kern2usr::abi::SEED_DEVICE_PATH).context("opening the device")?;
        println!("reading fd={} after SIGUSR1", dev.as_raw_fd());
        wait_sigusr1()?;
        let mut rec = [0u8; 16];
        match dev.read(&mut rec) {
            Ok(n) => {
                let word = |at: usize| {
                    rec.get(at..at + 4)
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, u32::from_ne_bytes)
                };
                println!(
                    "read returned {n} bytes: code={} round={}",
                    word(8),
                    word(12)
                );
            }
            Err(e) => println!("read returned errno {}", e.raw_os_error().unwrap_or(0)),
        }
    }
    loop {
        std::thread::park();
    }
}

/// SIGUSR1 blocked, to be taken by [`wait_sigusr1`] (no handler runs).
fn block_sigusr1() -> Result<()> {
    let set = sigusr1_set();
    // SAFETY: `set` is an initialised signal set; the old mask is not asked for.
    let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    anyhow::ensure!(ret == 0, "pthread_sigmask: error {ret}");
    Ok(())
}

/// Waits until SIGUSR1 (blocked by [`block_sigusr1`]) is sent.
fn wait_sigusr1() -> Result<()> {
    let set = sigusr1_set();
    let mut sig = 0;
    // SAFETY: `set` is an initialised signal set and `sig` a valid out pointer.
    let ret = unsafe { libc::sigwait(&set, &mut sig) };
    anyhow::ensure!(ret == 0, "sigwait: error {ret}");
    Ok(())
}

fn sigusr1_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset() initialises it and
    // sigaddset() with a valid signal number cannot fail.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        set
    }
}
