//! The test kit: what the appliance's integration tests (`edge/tests`) and the HIL rig
//! (`hil-tests`) share, so that each exists once. Dev-only: nothing in the appliance links it.
//!
//! * [`Pty`]: pseudo-terminals, the serial lines the tests play devices on;
//! * [`Central`]: a stand-in for central on the real broker, and [`publish_retained`] for what
//!   central sends;
//! * [`Process`]: the appliance as a child process, killed (SIGKILL) or stopped (SIGTERM);
//! * [`simulate`]: the traffic simulator that writes the committed traces and the studies'
//!   occupancies; [`corridor`]: central's demo route, its trucks' stories and each post's trace;
//! * [`browser`]: a headless Chromium over WebDriver, for the appliance's lane screen and
//!   central's board.
//!
//! The broker itself is the appliance's own `acsgd::mosquitto` (a real mosquitto), which the
//! kit cannot name without depending on the crate it tests.

pub mod browser;
pub mod central;
pub mod corridor;
pub mod process;
pub mod simulate;

pub use central::{publish_retained, Central, Received};
pub use process::Process;

use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::PathBuf;

/// A pseudo-terminal: the master a test writes to (the device's side), the slave the
/// appliance opens by its path. The slave stays open here as long as the `Pty` lives, so the
/// line does not hang up between the appliance's opens.
pub struct Pty {
    pub master: File,
    pub slave: File,
    /// The slave's path (`/dev/pts/N`).
    pub path: PathBuf,
}

/// Opens a pseudo-terminal. Neither descriptor is inherited by processes the test starts: a
/// master held by the appliance would keep the line up after a test unplugs the device.
#[allow(unsafe_code)] // openpty and ttyname: std has no pseudo-terminals
pub fn pty() -> std::io::Result<Pty> {
    let (mut m, mut s) = (0, 0);
    // SAFETY: openpty writes two descriptors we then own; name, termios and winsize are null.
    let rc = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are ours alone from here on; File closes them.
    let (master, slave) = unsafe { (File::from_raw_fd(m), File::from_raw_fd(s)) };
    for fd in [m, s] {
        // SAFETY: fcntl on descriptors we own.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: `s` is open; ttyname returns a static buffer (or null), copied at once.
    let name = unsafe { libc::ttyname(s) };
    if name.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: non-null, NUL-terminated, valid until the next ttyname call on this thread.
    let path = unsafe { std::ffi::CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned();
    Ok(Pty {
        master,
        slave,
        path: path.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn what_the_master_writes_the_slave_reads() {
        let mut p = pty().unwrap();
        assert!(p.path.starts_with("/dev/pts"), "{}", p.path.display());
        // Raw bytes through a line discipline in canonical mode end at a newline.
        p.master.write_all(b"A5 5A\n").unwrap();
        let mut buf = [0u8; 16];
        let n = p.slave.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"A5 5A\n");
    }
}
