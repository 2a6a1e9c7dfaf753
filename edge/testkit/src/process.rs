//! The appliance (or any program a test runs) as a child process the test owns: killed with
//! SIGKILL when asked or dropped, stopped with SIGTERM, waited for without racing its exit.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A running child process.
pub struct Process {
    child: Option<Child>,
}

impl Process {
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Process> {
        Ok(Process {
            child: Some(cmd.spawn()?),
        })
    }

    /// Its PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no chance to flush or say goodbye. Nothing when it has already been reaped.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and its exit status (`None` when it had already been reaped).
    #[allow(unsafe_code)] // kill(2) with a signal of our choice: std sends only SIGKILL
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) on our own child, not yet reaped (its PID cannot have been reused).
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        c.wait().ok()
    }

    /// Waits up to `limit` for it to exit by itself; its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let c = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn terminate_sends_sigterm_and_reaps() {
        let mut p = Process::spawn(Command::new("sleep").arg("30")).unwrap();
        assert!(p.is_running());
        assert!(p.pid().is_some());
        let status = p.terminate().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        assert!(!p.is_running());
        assert!(p.terminate().is_none(), "reaped once");
    }

    #[test]
    fn wait_exit_returns_the_status_or_none_while_it_runs() {
        let mut done = Process::spawn(Command::new("sh").args(["-c", "exit 3"])).unwrap();
        assert_eq!(
            done.wait_exit(Duration::from_secs(30)).unwrap().code(),
            Some(3)
        );
        let mut running = Process::spawn(Command::new("sleep").arg("30")).unwrap();
        assert!(running.wait_exit(Duration::ZERO).is_none());
        running.kill();
        assert!(!running.is_running());
    }
}
