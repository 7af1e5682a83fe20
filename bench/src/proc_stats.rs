//! What a running process costs, read from `/proc`: CPU time over all its threads and resident
//! memory. Zero when the process is gone or `/proc` is unavailable, so a benchmark row shows
//! 0 rather than aborting the run.

/// Nanoseconds `pid` has spent on a CPU, summed over its live threads (`schedstat`, exact to
/// the nanosecond, unlike the 10 ms ticks of `/proc/<pid>/stat`).
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    threads
        .filter_map(Result::ok)
        .filter_map(|thread| std::fs::read_to_string(thread.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Resident set size of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
