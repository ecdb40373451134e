//! The listener role: a child process of the fuzzer that does what it is
//! told, one request line on stdin, one answer line on stdout, so that
//! "read late", "never read", SIGSTOP and kill -9 are real.

use std::io::{BufRead, Write};

use kern2usr::abi::{
    pattern_byte, Info, ReadBuffer, Register, DEVICE_PATH, IOC_ACK, IOC_ACK_ROUND, IOC_INFO,
    IOC_MAGIC, IOC_READ_BUFFER, IOC_REGISTER,
};

/// A mapping this process holds.
struct Map {
    addr: *mut libc::c_void,
    len: usize,
    data: bool,
    shared: bool,
    write: bool,
    /// Byte 1 was written with [`MARK`] (a private mapping).
    marked: bool,
}

/// What a private mapping's byte 1 is overwritten with.
pub const MARK: u8 = 0xAB;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn err() -> String {
    format!("err {}", errno())
}

/// How bytes compare with the buffer's possible contents: `Z` all zero,
/// `P` all the pattern, `M` each byte one of the two, `X` anything else.
/// With `marked`, byte 1 must be [`MARK`] and is otherwise skipped.
pub fn classify(bytes: &[u8], marked: bool) -> char {
    let (mut zero, mut pat) = (true, true);
    for (i, &b) in bytes.iter().enumerate() {
        if marked && i == 1 {
            if b != MARK {
                return 'X';
            }
            continue;
        }
        let p = pattern_byte(i);
        if b != 0 && b != p {
            return 'X';
        }
        zero &= b == 0;
        pat &= b == p;
    }
    match (zero, pat) {
        (true, _) => 'Z',
        (_, true) => 'P',
        _ => 'M',
    }
}

fn num<T: std::str::FromStr>(w: &[&str], i: usize) -> Option<T> {
    w.get(i).and_then(|s| s.parse().ok())
}

/// Run the role until stdin ends or "exit" comes.
pub fn run() -> ! {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    let mut maps: Vec<Map> = Vec::new();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.first() == Some(&"exit") {
            std::process::exit(0);
        }
        let answer = handle(&w, &mut maps).unwrap_or_else(|| format!("bad request {line:?}"));
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
    std::process::exit(0)
}

fn ioctl_ret(r: libc::c_int) -> String {
    if r < 0 {
        err()
    } else {
        format!("ok {r}")
    }
}

fn handle(w: &[&str], maps: &mut Vec<Map>) -> Option<String> {
    let fd = |i: usize| num::<i32>(w, i);
    let answer = match *w.first()? {
        "efds" => {
            // SAFETY: eventfd() takes no pointers.
            let a = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            // SAFETY: as above.
            let b = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            if a < 0 || b < 0 {
                err()
            } else {
                format!("ok {a} {b}")
            }
        }
        "open" => {
            let path = std::ffi::CString::new(DEVICE_PATH).ok()?;
            // SAFETY: a valid NUL-terminated path.
            let r = unsafe {
                libc::open(
                    path.as_ptr(),
                    libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
                )
            };
            if r < 0 {
                err()
            } else {
                format!("ok {r}")
            }
        }
        "close" => {
            // SAFETY: closing an fd number; the fuzzer only names fds it knows.
            let r = unsafe { libc::close(fd(1)?) };
            if r < 0 {
                err()
            } else {
                "ok".to_owned()
            }
        }
        "dup" => {
            // SAFETY: dup() takes no pointers.
            let r = unsafe { libc::fcntl(fd(1)?, libc::F_DUPFD_CLOEXEC, 0) };
            if r < 0 {
                err()
            } else {
                format!("ok {r}")
            }
        }
        "readefd" => {
            let f = fd(1)?;
            let wait: i32 = num(w, 2)?;
            let mut p = libc::pollfd {
                fd: f,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, wait) };
            if r < 0 {
                err()
            } else if r == 0 {
                "eagain".to_owned()
            } else {
                let mut v = 0u64;
                // SAFETY: reads 8 bytes into a u64.
                let n = unsafe { libc::read(f, (&mut v as *mut u64).cast(), 8) };
                if n == 8 {
                    format!("val {v}")
                } else {
                    err()
                }
            }
        }
        "write" => {
            let v: u64 = num(w, 2)?;
            // SAFETY: writes 8 bytes from a u64.
            let n = unsafe { libc::write(fd(1)?, (&v as *const u64).cast(), 8) };
            if n == 8 {
                "ok".to_owned()
            } else {
                err()
            }
        }
        "records" => {
            let len: usize = num(w, 2)?;
            let mut buf = vec![0u8; len];
            // SAFETY: reads at most len bytes into buf.
            let n = unsafe { libc::read(fd(1)?, buf.as_mut_ptr().cast(), len) };
            if n < 0 {
                err()
            } else {
                let recs: Vec<String> = buf[..n as usize]
                    .chunks_exact(16)
                    .map(|c| {
                        let seq = u64::from_ne_bytes(c[0..8].try_into().unwrap_or_default());
                        let code = u32::from_ne_bytes(c[8..12].try_into().unwrap_or_default());
                        let round = u32::from_ne_bytes(c[12..16].try_into().unwrap_or_default());
                        format!("{seq}:{code}:{round}")
                    })
                    .collect();
                format!("recs {}", recs.join(","))
            }
        }
        "ack" => {
            // SAFETY: K2U_IOC_ACK takes no argument.
            ioctl_ret(unsafe { libc::ioctl(fd(1)?, IOC_ACK as _, 0) })
        }
        "ackround" => {
            let id: u32 = num(w, 2)?;
            // SAFETY: K2U_IOC_ACK_ROUND reads a u32 at the pointer.
            ioctl_ret(unsafe { libc::ioctl(fd(1)?, IOC_ACK_ROUND as _, &id as *const u32) })
        }
        "register" => {
            let reg = Register {
                efd: fd(2)?,
                efd2: fd(3)?,
            };
            // SAFETY: K2U_IOC_REGISTER reads a struct k2u_register.
            ioctl_ret(unsafe { libc::ioctl(fd(1)?, IOC_REGISTER as _, &reg as *const Register) })
        }
        "info" => {
            let mut info = Info::default();
            // SAFETY: K2U_IOC_INFO writes a struct k2u_info.
            let r = unsafe { libc::ioctl(fd(1)?, IOC_INFO as _, &mut info as *mut Info) };
            if r < 0 {
                err()
            } else {
                format!(
                    "info {} {} {} {}",
                    info.abi_version, info.event_mode, info.buffer_size, info.period_ms
                )
            }
        }
        "badioctl" => {
            let cmd = kern2usr::abi::ioc(0, IOC_MAGIC, 0x7f, 0);
            // SAFETY: an unknown ioctl number; the module must not touch the argument.
            ioctl_ret(unsafe { libc::ioctl(fd(1)?, cmd as _, 0) })
        }
        "readbuf" => {
            let len: usize = num(w, 2)?;
            let mut buf = vec![0u8; len.max(1)];
            let rb = ReadBuffer {
                addr: buf.as_mut_ptr() as u64,
                len: len as u64,
            };
            // SAFETY: the module writes at most rb.len bytes to buf.
            let r = unsafe { libc::ioctl(fd(1)?, IOC_READ_BUFFER as _, &rb as *const ReadBuffer) };
            if r < 0 {
                err()
            } else {
                let n = (r as usize).min(len);
                format!("n {r} {}", classify(&buf[..n], false))
            }
        }
        "mmap" => {
            let (len, off): (usize, u64) = (num(w, 2)?, num(w, 3)?);
            let (shared, write, exec) = (w.get(4)? == &"1", w.get(5)? == &"1", w.get(6)? == &"1");
            let mut prot = libc::PROT_READ;
            if write {
                prot |= libc::PROT_WRITE;
            }
            if exec {
                prot |= libc::PROT_EXEC;
            }
            let flags = if shared {
                libc::MAP_SHARED
            } else {
                libc::MAP_PRIVATE
            };
            // SAFETY: a new mapping at an address the kernel picks.
            let addr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    prot,
                    flags,
                    fd(1)?,
                    off as libc::off_t,
                )
            };
            if addr == libc::MAP_FAILED {
                err()
            } else {
                maps.push(Map {
                    addr,
                    len,
                    data: off == 0,
                    shared,
                    write,
                    marked: false,
                });
                "ok".to_owned()
            }
        }
        "munmap" => match maps.pop() {
            None => "none".to_owned(),
            Some(m) => {
                // SAFETY: a mapping this process made and nothing else refers to.
                let r = unsafe { libc::munmap(m.addr, m.len) };
                if r < 0 {
                    err()
                } else {
                    "ok".to_owned()
                }
            }
        },
        "check" => {
            let classes: Vec<String> = maps
                .iter()
                .map(|m| {
                    if !m.data {
                        return "C".to_owned();
                    }
                    let mut copy = vec![0u8; m.len];
                    // SAFETY: the mapping is live and m.len bytes long
                    // (at most the buffer size, so every page is backed).
                    unsafe {
                        std::ptr::copy_nonoverlapping(m.addr.cast::<u8>(), copy.as_mut_ptr(), m.len)
                    };
                    classify(&copy, m.marked).to_string()
                })
                .collect();
            if classes.is_empty() {
                "maps -".to_owned()
            } else {
                format!("maps {}", classes.join(","))
            }
        }
        "wpriv" => match maps
            .iter_mut()
            .find(|m| m.data && !m.shared && m.write && m.len > 1)
        {
            None => "none".to_owned(),
            Some(m) => {
                // SAFETY: byte 1 of a live, writable private mapping.
                unsafe { m.addr.cast::<u8>().add(1).write_volatile(MARK) };
                m.marked = true;
                "ok".to_owned()
            }
        },
        "mremap" => match maps.iter_mut().find(|m| m.data) {
            None => "none".to_owned(),
            Some(m) => {
                // One page more than the mapping has (mremap counts pages).
                let grown = m.len.div_ceil(4096) * 4096 + 4096;
                // SAFETY: resizes a mapping this process owns; on success the
                // old address is gone and only the new one is used.
                let addr = unsafe { libc::mremap(m.addr, m.len, grown, libc::MREMAP_MAYMOVE) };
                if addr == libc::MAP_FAILED {
                    err()
                } else {
                    // Only the old length is ever read again.
                    m.addr = addr;
                    "ok".to_owned()
                }
            }
        },
        "fork" => {
            // SAFETY: this process is single-threaded; the child only calls
            // pause() until it is killed.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                loop {
                    // SAFETY: pause() takes no arguments.
                    unsafe { libc::pause() };
                }
            }
            if pid < 0 {
                err()
            } else {
                format!("ok {pid}")
            }
        }
        _ => return None,
    };
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_buffer_contents() {
        let pattern: Vec<u8> = (0..600).map(pattern_byte).collect();
        assert_eq!(classify(&pattern, false), 'P');
        assert_eq!(classify(&[0; 600], false), 'Z');
        let mut mixed = pattern.clone();
        mixed[300..].fill(0);
        assert_eq!(classify(&mixed, false), 'M');
        let mut bad = pattern.clone();
        bad[7] = 99;
        assert_eq!(classify(&bad, false), 'X');
        let mut marked = pattern.clone();
        marked[1] = MARK;
        assert_eq!(classify(&marked, true), 'P');
        assert_eq!(classify(&pattern, true), 'X');
    }
}
