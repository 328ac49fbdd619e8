//! The loop against real child processes (no container, no root): output
//! read to the end after exit, the drain limit, a forwarded signal, the
//! timeout, and a handler that goes on after the end.

use super::*;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

/// A plain child process, watched like a container.
struct Child {
    child: std::process::Child,
    pidfd: OwnedFd,
    deadline: Option<Instant>,
    timed_out: bool,
}

impl Child {
    /// `sh -c script`, its stdout and stderr as the loop's streams 0 and 1.
    fn spawn(script: &str) -> (Child, Vec<OwnedFd>) {
        let mut child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let stdout = OwnedFd::from(child.stdout.take().expect("stdout"));
        let stderr = OwnedFd::from(child.stderr.take().expect("stderr"));
        let pid = rustix::process::Pid::from_child(&child);
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
            .expect("pidfd_open");
        let child = Child {
            child,
            pidfd,
            deadline: None,
            timed_out: false,
        };
        (child, vec![stdout, stderr])
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: signalling our own child, not yet reaped (the loop reaps
        // it only after the pidfd reports its exit).
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, signal) },
            0
        );
    }
}

impl Supervised for Child {
    fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let status = self
            .child
            .try_wait()
            .map_err(|e| RuntimeError::host_io("waiting for the child", e))?;
        Ok(status.map(|s| match (s.code(), s.signal()) {
            (Some(code), _) => ExitStatus::Exited(code),
            (None, Some(signal)) => ExitStatus::Signaled(signal),
            (None, None) => unreachable!("a reaped child exited or was signalled"),
        }))
    }

    fn deadline(&self) -> Option<Instant> {
        self.deadline.filter(|_| !self.timed_out)
    }

    fn kill_for_timeout(&mut self) -> Result<()> {
        self.timed_out = true;
        self.child
            .kill()
            .map_err(|e| RuntimeError::host_io("killing the child", e))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keeps what the loop reports; finished once it has ended.
struct Recorder {
    child: Option<Child>,
    output: [Vec<u8>; 2],
    events: Vec<&'static str>,
    signals: Vec<libc::c_int>,
    ended: Option<Exit>,
    /// Raise SIGUSR1 at ourselves once stdout holds this.
    raise_after: Option<&'static [u8]>,
}

impl Recorder {
    fn new(child: Child) -> Recorder {
        Recorder {
            child: Some(child),
            output: [Vec::new(), Vec::new()],
            events: Vec::new(),
            signals: Vec::new(),
            ended: None,
            raise_after: None,
        }
    }
}

impl Handler for Recorder {
    type Process = Child;
    type Error = RuntimeError;

    fn process(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    fn event(&mut self, event: Event<'_>) -> Result<()> {
        match event {
            Event::Signal(signal) => {
                self.events.push("signal");
                self.signals.push(signal);
                // Forwarded, as `berth run` does.
                if let Some(child) = &self.child {
                    child.signal(signal);
                }
            }
            Event::Output { stream, data } => {
                self.output[stream].extend_from_slice(data);
                let seen = &self.output[0];
                if let Some(marker) = self.raise_after {
                    if seen.windows(marker.len()).any(|w| w == marker) {
                        self.raise_after = None;
                        // SAFETY: raise sends to this thread, which blocks
                        // SIGUSR1 (the signalfd's): it only becomes pending.
                        assert_eq!(unsafe { libc::raise(libc::SIGUSR1) }, 0);
                    }
                }
            }
            Event::OutputFailed { error, .. } => panic!("reading output failed: {error}"),
            Event::Exited(_) => self.events.push("exited"),
            Event::Ended(exit) => {
                self.events.push("ended");
                self.ended = Some(exit);
            }
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.ended.is_some()
    }
}

fn signals(list: &[libc::c_int]) -> SignalFd {
    SignalFd::block(list, OnDrop::Restore).expect("signalfd")
}

#[test]
fn output_is_read_to_the_end_after_the_process_exits() {
    // Nearly a full pipe each on stdout and stderr, all of it written
    // before the loop reads anything: the loop sees the exit first and
    // must still read every byte, a small chunk at a time.
    let (child, streams) =
        Child::spawn("head -c 60000 /dev/zero; head -c 30000 /dev/zero >&2; exit 3");
    let mut exited = PollSet::default();
    exited.add(child.pidfd.as_fd(), READABLE);
    exited
        .wait(Some(Instant::now() + Duration::from_secs(10)))
        .expect("poll the pidfd");
    assert_ne!(exited.revents(0), 0, "the child did not exit in time");
    let mut recorder = Recorder::new(child);
    let mut supervisor = Supervisor::new(signals(&[]), streams).read_chunk(4096);
    supervisor.run(&mut recorder).expect("supervise");
    assert_eq!(recorder.output[0].len(), 60_000);
    assert_eq!(recorder.output[1].len(), 30_000);
    assert_eq!(recorder.events, ["exited", "ended"]);
    let exit = recorder.ended.expect("ended");
    assert_eq!(exit.status, ExitStatus::Exited(3));
}

#[test]
fn output_larger_than_the_pipes_is_all_read() {
    let (child, streams) = Child::spawn(
        "head -c 300000 /dev/zero; head -c 70000 /dev/zero >&2; head -c 50000 /dev/zero",
    );
    let mut recorder = Recorder::new(child);
    let mut supervisor = Supervisor::new(signals(&[]), streams);
    supervisor.run(&mut recorder).expect("supervise");
    assert_eq!(recorder.output[0].len(), 350_000);
    assert_eq!(recorder.output[1].len(), 70_000);
    assert_eq!(recorder.ended.expect("ended").status, ExitStatus::Exited(0));
}

#[test]
fn a_stream_held_open_by_another_process_ends_at_the_drain_limit() {
    // The background sleep keeps both pipes open after sh exits.
    let (child, streams) = Child::spawn("sleep 30 & echo $!");
    let mut recorder = Recorder::new(child);
    let limit = Duration::from_millis(200);
    let mut supervisor = Supervisor::new(signals(&[]), streams).drain_limit(limit);
    supervisor.run(&mut recorder).expect("supervise");
    let sleeper: libc::pid_t = std::str::from_utf8(&recorder.output[0])
        .expect("utf-8")
        .trim()
        .parse()
        .expect("the sleeper's pid");
    // SAFETY: killing the sleeper this test started (its orphan now).
    unsafe { libc::kill(sleeper, libc::SIGKILL) };
    let exit = recorder.ended.expect("ended");
    assert_eq!(exit.status, ExitStatus::Exited(0));
    let drained_for = exit.at.elapsed();
    assert!(drained_for >= limit, "ended after {drained_for:?}");
    assert_eq!(recorder.events, ["exited", "ended"]);
}

#[test]
fn a_signal_to_the_supervisor_reaches_the_handler_and_is_forwarded() {
    let (child, streams) =
        Child::spawn("trap 'echo got it; exit 7' USR1; echo ready; while :; do sleep 0.02; done");
    let mut recorder = Recorder::new(child);
    recorder.raise_after = Some(b"ready\n");
    let mut supervisor = Supervisor::new(signals(&[libc::SIGUSR1]), streams);
    supervisor.run(&mut recorder).expect("supervise");
    assert_eq!(recorder.signals, [libc::SIGUSR1]);
    assert_eq!(recorder.output[0], b"ready\ngot it\n");
    assert_eq!(recorder.events, ["signal", "exited", "ended"]);
    assert_eq!(recorder.ended.expect("ended").status, ExitStatus::Exited(7));
}

#[test]
fn a_process_past_its_deadline_is_killed_once_and_flagged() {
    let (mut child, streams) = Child::spawn("exec sleep 30");
    let started = Instant::now();
    child.deadline = Some(started + Duration::from_millis(100));
    let mut recorder = Recorder::new(child);
    let mut supervisor = Supervisor::new(signals(&[]), streams);
    supervisor.run(&mut recorder).expect("supervise");
    let exit = recorder.ended.expect("ended");
    assert_eq!(exit.status, ExitStatus::Signaled(libc::SIGKILL));
    assert!(recorder.child.as_ref().expect("child").timed_out);
    let took = exit.at - started;
    assert!(took >= Duration::from_millis(100), "killed after {took:?}");
    assert!(took < Duration::from_secs(20), "killed after {took:?}");
}

/// A handler that goes on after the end: its timer is still served, and
/// the loop no longer watches the process it gave back.
struct Lingering {
    recorder: Recorder,
    after_end: Option<Instant>,
    fired: bool,
}

impl Handler for Lingering {
    type Process = Child;
    type Error = RuntimeError;

    fn process(&mut self) -> Option<&mut Child> {
        self.recorder.process()
    }

    fn event(&mut self, event: Event<'_>) -> Result<()> {
        if let Event::Ended(_) = event {
            // Torn down, as the shim does before it records the exit.
            self.recorder.child = None;
            self.after_end = Some(Instant::now() + Duration::from_millis(50));
        }
        self.recorder.event(event)
    }

    fn finished(&self) -> bool {
        self.fired
    }

    fn next_timer(&self) -> Option<Instant> {
        self.after_end
    }

    fn service(&mut self, _set: &PollSet) -> Result<()> {
        if self.after_end.is_some_and(|at| Instant::now() >= at) {
            self.fired = true;
        }
        Ok(())
    }
}

#[test]
fn the_handler_is_served_after_the_end_until_it_has_finished() {
    let (child, streams) = Child::spawn("echo bye");
    let mut handler = Lingering {
        recorder: Recorder::new(child),
        after_end: None,
        fired: false,
    };
    let mut supervisor = Supervisor::new(signals(&[]), streams);
    supervisor.run(&mut handler).expect("supervise");
    assert!(handler.fired);
    assert_eq!(handler.recorder.output[0], b"bye\n");
    assert_eq!(handler.recorder.events, ["exited", "ended"]);
}

#[test]
fn a_handler_error_ends_the_run_and_the_loop_can_be_resumed() {
    struct FailOnce(Recorder, bool);
    impl Handler for FailOnce {
        type Process = Child;
        type Error = RuntimeError;
        fn process(&mut self) -> Option<&mut Child> {
            self.0.process()
        }
        fn event(&mut self, event: Event<'_>) -> Result<()> {
            let exited = matches!(event, Event::Exited(_));
            self.0.event(event)?;
            if exited && !self.1 {
                self.1 = true;
                return Err(RuntimeError::InvalidSpec("handler says no".into()));
            }
            Ok(())
        }
        fn finished(&self) -> bool {
            self.0.finished()
        }
    }
    let (child, streams) = Child::spawn("echo one; exit 5");
    let mut handler = FailOnce(Recorder::new(child), false);
    // The streams end at once: a resumed run must not sit out the limit.
    let limit = Duration::from_secs(60);
    let mut supervisor = Supervisor::new(signals(&[]), streams).drain_limit(limit);
    let err = supervisor
        .run(&mut handler)
        .expect_err("the handler failed");
    assert!(err.to_string().contains("handler says no"), "{err}");
    supervisor.run(&mut handler).expect("resumed");
    let exit = handler.0.ended.expect("ended");
    assert!(
        exit.at.elapsed() < limit / 2,
        "ended {:?} after the exit",
        exit.at.elapsed()
    );
    assert_eq!(handler.0.output[0], b"one\n");
    assert_eq!(handler.0.events, ["exited", "ended"]);
    assert_eq!(
        handler.0.ended.expect("ended").status,
        ExitStatus::Exited(5)
    );
}
