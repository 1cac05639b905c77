//! Child processes in tests: killed when dropped, and waited for with a bound. Shared by
//! the cluster harness and the single-node binary tests.

use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

/// Kills the child when dropped, so no test leaves a process behind, even when it fails.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to `limit` for the child to exit; `None` if it is still running.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
