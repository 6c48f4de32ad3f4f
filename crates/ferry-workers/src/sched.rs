//! The CPU scheduling policy of Ferry and its workers.
//!
//! Every proxied request crosses the Unix socket between Ferry and a Node.js worker two to four
//! times. Under Linux's default policy each of those writes wakes the other side, and when both
//! share a core the woken one preempts the writer at once: measured on the showcase with Ferry and
//! one worker pinned to one core, ~8 context switches per `/api/hello` request (next start: ~1),
//! each in the middle of the other's work. Under `SCHED_BATCH` a woken thread does not preempt the
//! running one; it runs when that one blocks or its time slice ends, and then handles everything
//! that became ready meanwhile: ~1 switch per request and ~15-20% less CPU per `/api/hello`
//! request (`/api/hello` ~1.2x the req/s of the default policy). But it halves large static
//! files (a 348 KB chunk: ~10k -> ~5.3k req/s on one core), so it is opt-in, for deployments whose
//! load is mostly rendered by workers on shared cores: `FERRY_SCHED_BATCH=1`.

/// Environment variable: `1` turns the policy on; anything else (or unset) keeps the default.
pub const BATCH_ENV: &str = "FERRY_SCHED_BATCH";

/// Puts the calling thread under `SCHED_BATCH` (Linux; elsewhere nothing happens) when
/// [`BATCH_ENV`] is `1`. Call it before starting the async runtime: threads and processes
/// (the workers) created afterwards inherit the policy. Returns whether the policy was applied.
pub fn apply_batch_policy() -> std::io::Result<bool> {
    if std::env::var_os(BATCH_ENV).is_none_or(|v| v != "1") {
        return Ok(false);
    }
    set_batch()
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_batch() -> std::io::Result<bool> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid, initialized sched_param that outlives the call; pid 0 is the
    // calling thread. SCHED_BATCH needs no privilege (priority 0, a non-realtime policy).
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc == 0 {
        Ok(true)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_batch() -> std::io::Result<bool> {
    Ok(false)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The `policy` field (41st) of a `/proc/.../stat` line.
    fn policy(stat: &str) -> Option<u32> {
        let after_comm = &stat[stat.rfind(')')? + 2..];
        after_comm.split_whitespace().nth(38)?.parse().ok()
    }

    #[test]
    fn thread_and_its_children_run_batch() {
        // A thread of its own: the policy must not leak into the test harness's threads.
        let (own, child) = std::thread::spawn(|| {
            assert!(set_batch().expect("sched_setscheduler"));
            let own = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
            let child = std::process::Command::new("cat")
                .arg("/proc/self/stat")
                .output()
                .expect("spawn cat");
            (own, String::from_utf8_lossy(&child.stdout).into_owned())
        })
        .join()
        .expect("thread");
        assert_eq!(policy(&own), Some(libc::SCHED_BATCH as u32));
        assert_eq!(policy(&child), Some(libc::SCHED_BATCH as u32));
        let here = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        assert_eq!(policy(&here), Some(libc::SCHED_OTHER as u32));
    }
}
