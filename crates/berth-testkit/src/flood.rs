//! Idle clients: connections that never send a byte, the cheapest attack
//! on a server's file descriptors.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One idle connection and when it was made.
pub struct IdleClient {
    pub stream: TcpStream,
    pub connected: Instant,
}

/// Opens up to `count` connections to `addr` at once, none of which sends a
/// byte; keeps those the server's kernel completes within `within` (a
/// server that stops accepting holds the rest off once its listen backlog
/// is full).
pub fn open_idle(addr: SocketAddr, count: usize, within: Duration) -> Vec<IdleClient> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let connected = runtime.block_on(async {
        let attempts: Vec<_> = (0..count)
            .map(|_| {
                tokio::spawn(async move {
                    let stream =
                        tokio::time::timeout(within, tokio::net::TcpStream::connect(addr)).await;
                    let stream = stream.ok()?.ok()?;
                    Some((stream, Instant::now()))
                })
            })
            .collect();
        let mut connected = Vec::new();
        for attempt in attempts {
            if let Ok(Some(done)) = attempt.await {
                connected.push(done);
            }
        }
        connected
    });
    let mut clients: Vec<IdleClient> = connected
        .into_iter()
        .filter_map(|(stream, connected)| {
            let stream = stream.into_std().ok()?;
            stream.set_nonblocking(false).ok()?;
            Some(IdleClient { stream, connected })
        })
        .collect();
    clients.sort_by_key(|c| c.connected);
    clients
}

impl IdleClient {
    /// Waits up to `patience` for the server to close this connection (EOF
    /// or reset, after whatever it sent first); how long after the
    /// connection was made that happened, or `None` if it stayed open.
    pub fn closed_by_server(&mut self, patience: Duration) -> Option<Duration> {
        let deadline = Instant::now() + patience;
        let mut buf = [0u8; 1024];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            if self
                .stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .is_err()
            {
                return Some(self.connected.elapsed());
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Some(self.connected.elapsed()),
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
                Err(_) => return Some(self.connected.elapsed()),
            }
        }
    }
}
