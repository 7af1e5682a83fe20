//! The async runtime a binary runs on, sized by its `*_WORKER_THREADS` setting.
//!
//! One thread is a current-thread runtime, as pingora and linkerd2-proxy run per core: every
//! task of a request — the HTTP connection, the gRPC connection, the stream relay — then runs
//! on the thread that was woken by the socket, with no cross-thread wake-ups (futex calls and
//! context switches) between them. On a small machine shared by the gateway, the scheduler and
//! the engine that is the cheaper choice (scripts/bench/overhead.sh measures both); more
//! threads add throughput only where there are idle cores to run them.

use std::num::NonZeroUsize;

/// `0` means one worker per available core (cgroup CPU quotas included).
pub fn worker_threads(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
    }
}

/// Builds the runtime: current-thread for one worker, multi-threaded otherwise. Blocking work
/// (`spawn_blocking`) has its own pool either way.
pub fn build(configured: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = worker_threads(configured);
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut multi = tokio::runtime::Builder::new_multi_thread();
        multi.worker_threads(threads);
        multi
    };
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_every_core_and_a_number_is_kept() {
        assert!(worker_threads(0) >= 1);
        assert_eq!(worker_threads(3), 3);
    }

    #[test]
    fn both_flavours_run_spawned_tasks() {
        for threads in [1, 2] {
            let runtime = build(threads).unwrap();
            let answer = runtime.block_on(async { tokio::spawn(async { 42 }).await.unwrap() });
            assert_eq!(answer, 42);
        }
    }
}
