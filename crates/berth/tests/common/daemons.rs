//! Daemons the end-to-end tests start (`berthd server`, `berthd agent`):
//! where berthd is, free ports, and a handle that kills and reaps its
//! process when dropped.

use std::path::PathBuf;
use std::process::Child;

/// berthd, built next to berth (see [`super::berth_binary`]).
pub fn berthd() -> PathBuf {
    super::berth_binary().with_file_name("berthd")
}

/// A TCP port on loopback that nothing listens on now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A daemon killed (SIGKILL) and reaped when dropped.
pub struct Daemon(pub Option<Child>);

impl Daemon {
    pub fn pid(&self) -> Option<i32> {
        self.0.as_ref().map(|c| c.id() as i32)
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (a graceful stop), then waits up to 30 s for the exit;
    /// SIGKILL after that. Whether it stopped on its own.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.0.take() else {
            return true;
        };
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet
        // (so not reused).
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: as in `stop`: our unreaped child.
            unsafe { libc::kill(pid, signal) };
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}
