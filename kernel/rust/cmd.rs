// SPDX-License-Identifier: GPL-2.0-only

//! The commands written to `cur_cmd`. A refused command returns an errno to
//! the writer, logs one line and leaves its reason in `last_error`.

use kernel::{fmt, prelude::*, str::BStr};

use crate::abi::Code;
use crate::eventfd::EventFdFile;
use crate::params;
use crate::state::{self, Locked};
use crate::sys::{self, PidRef};

/// Name of a command value, as in C's `k2u_cmd_name()`.
fn cmd_name(cmd: u32) -> &'static str {
    Code::from_value(u64::from(cmd)).map_or("UNKNOWN", Code::name)
}

/// A write to `cur_cmd` (under the parameter lock).
pub(crate) fn write(val: &CStr) -> Result {
    let dev = state::device().ok_or(ENODEV)?;
    let mut k = Locked::new(&dev.default);
    if k.dead {
        return Err(ENODEV);
    }
    let Ok(cmd) = params::kstrtouint(val) else {
        return Err(k.refuse_text(val.to_bytes(), fmt!("not a command number (valid: 1-5)")));
    };
    k.run(cmd)?;
    params::set_cur_cmd(cmd);
    k.last_error.clear();
    Ok(())
}

impl Locked<'_> {
    /// Refuses command `cmd` with `err` because of `why`.
    fn refuse(&mut self, cmd: u32, err: Error, why: fmt::Arguments<'_>) -> Error {
        self.last_error.set(why);
        pr_notice!(
            "{}command {} ({}) refused: {}\n",
            self.dev.tag(),
            cmd,
            cmd_name(cmd),
            self.last_error.as_bstr()
        );
        err
    }

    /// Refuses operation `op` (`REGISTER`) with `err` because of `why`:
    /// `<op> refused: <why>`, `why` kept in `last_error`.
    pub(crate) fn refuse_op(&mut self, op: &str, err: Error, why: fmt::Arguments<'_>) -> Error {
        self.last_error.set(why);
        pr_notice!(
            "{}{} refused: {}\n",
            self.dev.tag(),
            op,
            self.last_error.as_bstr()
        );
        err
    }

    /// Refuses a write that is no number, quoting it (up to 16 bytes of its
    /// first line).
    fn refuse_text(&mut self, text: &[u8], why: fmt::Arguments<'_>) -> Error {
        let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
        let quoted = BStr::from_bytes(line.get(..16).unwrap_or(line));
        self.last_error.set(why);
        pr_notice!(
            "command {} (UNKNOWN) refused: {}\n",
            quoted,
            self.last_error.as_bstr()
        );
        EINVAL
    }

    /// `K2U_IOC_CHANNEL_CMD` on a created channel: command `cmd`, 2-5
    /// only (the listener is attached at CREATE).
    pub(crate) fn channel_cmd(&mut self, cmd: u32) -> Result {
        if self.dead {
            return Err(ENODEV);
        }
        if !(Code::Mmap.value()..=Code::ExitTest.value()).contains(&cmd) {
            return Err(self.refuse(cmd, EINVAL, fmt!("not a channel command (valid: 2-5)")));
        }
        self.run(cmd)?;
        self.last_error.clear();
        Ok(())
    }

    /// Runs command `cmd`.
    fn run(&mut self, cmd: u32) -> Result {
        let code = match Code::from_value(u64::from(cmd)) {
            Some(Code::Find) if self.dev.is_default() => return self.find(),
            Some(code @ (Code::Mmap | Code::StartTest | Code::StopTest | Code::ExitTest)) => code,
            _ => {
                return Err(self.refuse(cmd, EINVAL, fmt!("unknown command {} (valid: 1-5)", cmd)))
            }
        };
        self.need_listener(cmd, code)?;
        match code {
            Code::Mmap => {
                if self.testing {
                    return Err(self.refuse(
                        cmd,
                        EBUSY,
                        fmt!("test is running: stop it (4) first"),
                    ));
                }
                self.post(code, 0);
                self.mmap_sent = true;
            }
            Code::StartTest => {
                if !self.mmap_sent {
                    return Err(self.refuse(
                        cmd,
                        EPROTO,
                        fmt!("MMAP (2) must come before START_TEST (3)"),
                    ));
                }
                if self.testing {
                    return Err(self.refuse(cmd, EBUSY, fmt!("test already running")));
                }
                self.post(code, 0);
                self.round_start();
                // A created channel logs no accepted command.
                if self.dev.is_default() {
                    pr_info!("Timer is started.\n");
                }
            }
            Code::StopTest => {
                if !self.testing {
                    return Err(self.refuse(cmd, EPROTO, fmt!("test is not running")));
                }
                self.round_stop();
                if self.dev.is_default() {
                    pr_info!("Timer is deleted.\n");
                    pr_info!("Avg copy time = {}\n", self.round_average());
                }
                self.post(code, 0);
            }
            _ => {
                // EXIT_TEST
                if self.testing {
                    self.round_stop();
                    if self.dev.is_default() {
                        pr_info!("Timer is deleted.\n");
                    }
                }
                self.post(code, 0);
                self.exit_sent = true;
            }
        }
        Ok(())
    }

    /// Commands 2-5 need a listener that has not been told to exit, and
    /// room for their event.
    fn need_listener(&mut self, cmd: u32, code: Code) -> Result {
        self.listener_gone();
        let default = self.dev.is_default();
        if self.link.is_none() {
            return Err(if default {
                self.refuse(cmd, EPROTO, fmt!("no listener: run FIND (1) first"))
            } else {
                self.refuse(cmd, EPROTO, fmt!("no listener: it has left the channel"))
            });
        }
        if self.exit_sent {
            return Err(if default {
                self.refuse(
                    cmd,
                    EPROTO,
                    fmt!("listener was told to exit (5): run FIND (1) for a new one"),
                )
            } else {
                self.refuse(cmd, EPROTO, fmt!("listener was told to exit (5)"))
            });
        }
        if !self.has_room(code) {
            return Err(self.refuse(
                cmd,
                EAGAIN,
                fmt!("event queue full: the listener is not reading events"),
            ));
        }
        Ok(())
    }

    /// FIND: resolve `usr_pid`'s two eventfds and hook them.
    fn find(&mut self) -> Result {
        let cmd = Code::Find.value();
        let (pid, efd, efd2) = params::usr();
        if pid <= 0 || efd < 0 || efd2 < 0 {
            return Err(self.refuse(cmd, EINVAL, fmt!("set usr_pid, usr_efd and usr_efd2 first")));
        }
        if efd == efd2 {
            return Err(self.refuse(
                cmd,
                EINVAL,
                fmt!("usr_efd and usr_efd2 must be two different eventfds"),
            ));
        }
        self.listener_gone();
        if self.testing {
            return Err(self.refuse(cmd, EBUSY, fmt!("test is running: stop it (4) before FIND")));
        }
        pr_info!(
            "Received from userspace: usr_pid={}, efd={}, efd2={}\n",
            pid,
            efd,
            efd2
        );
        let Some(task) = sys::task_by_vpid(pid) else {
            return Err(self.refuse(cmd, ESRCH, fmt!("usr_pid={}: no such process", pid)));
        };
        // As pidfd_getfd(): the access check and the file lookups under
        // the target's exec_update_lock, so no execve comes between.
        let Ok(exec_lock) = sys::ExecUpdateLock::new(&task) else {
            return Err(EINTR);
        };
        if !sys::may_take_files(&task) {
            drop(exec_lock);
            return Err(self.refuse(
                cmd,
                EPERM,
                fmt!(
                    "may not reach into the files of pid {} (ptrace access)",
                    pid
                ),
            ));
        }
        // Both are >= 0 here.
        let file = sys::task_file(&task, efd as u32);
        let file2 = sys::task_file(&task, efd2 as u32);
        drop(exec_lock);
        let Some(file) = file else {
            return Err(self.refuse(
                cmd,
                EBADF,
                fmt!("usr_efd={} is not an open fd of pid {}", efd, pid),
            ));
        };
        let Some(file2) = file2 else {
            return Err(self.refuse(
                cmd,
                EBADF,
                fmt!("usr_efd2={} is not an open fd of pid {}", efd2, pid),
            ));
        };
        let Ok(ctx) = EventFdFile::new(&file) else {
            return Err(self.refuse(
                cmd,
                EINVAL,
                fmt!("usr_efd={} of pid {} is not an eventfd", efd, pid),
            ));
        };
        let Ok(ctx2) = EventFdFile::new(&file2) else {
            return Err(self.refuse(
                cmd,
                EINVAL,
                fmt!("usr_efd2={} of pid {} is not an eventfd", efd2, pid),
            ));
        };
        pr_info!(
            "Resolved pointer to the userspace program task struct: {}\n",
            sys::hashed(task.as_ptr())
        );
        pr_info!(
            "Resolved pointer to the userspace program's eventfd's file struct: {} and struct2 : {}\n",
            sys::hashed(file.as_ptr()),
            sys::hashed(file2.as_ptr())
        );
        let Some(tgid) = PidRef::tgid_of(&task) else {
            return Err(self.refuse(cmd, ESRCH, fmt!("usr_pid={}: no such process", pid)));
        };
        match self.attach(pid, tgid, ctx, ctx2) {
            Err(e) => Err(e.refuse(|err, why| self.refuse(cmd, err, why))),
            Ok(()) => {
                if let Some(link) = &self.link {
                    pr_info!(
                        "Resolved pointer to the userspace program's eventfd's context: {} and context2 : {}\n",
                        sys::hashed(link.efd().as_ptr()),
                        sys::hashed(link.efd2().as_ptr())
                    );
                }
                Ok(())
            }
        }
    }
}
