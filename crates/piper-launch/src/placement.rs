//! Where a ring's nodes run: `--cpus`.
//!
//! A hop in a ring is a wake-up. On the CPU the sender runs on, it is a
//! context switch; on another CPU, an inter-processor interrupt and a
//! cache-cold receiver, several times slower (far worse in a VM). A ring
//! with one message in flight has only one node running at a time, so
//! packing it onto one CPU loses no parallelism, and the scheduler, which
//! cannot know that, spreads it. Packing is a trap, though, when that CPU
//! is busy with something else: `auto` (the default) packs onto the least
//! busy CPU, watches how long the nodes wait to run there, and moves the
//! ring to a quieter CPU, or lets the scheduler place it, when they wait.

use std::time::Duration;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The CPUs this process may run on.
pub fn allowed() -> Vec<usize> {
    let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

/// A set of the given CPUs.
pub fn set_of(cpus: &[usize]) -> CpuSet {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        let _ = set.set(cpu);
    }
    set
}

/// Busy and total jiffies of each CPU, from `/proc/stat`.
pub fn cpu_times() -> Vec<(usize, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let cpu: usize = fields.next()?.strip_prefix("cpu")?.parse().ok()?;
            let ticks: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
            let total: u64 = ticks.iter().sum();
            // idle and iowait are not busy.
            let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
            Some((cpu, total - idle, total))
        })
        .collect()
}

/// The least busy of `cpus` over `sample`, and its busy share.
pub fn least_busy(cpus: &[usize], sample: Duration) -> Option<(usize, f64)> {
    let before = cpu_times();
    std::thread::sleep(sample);
    let after = cpu_times();
    let share = |cpu: usize| {
        let a = before.iter().find(|t| t.0 == cpu)?;
        let b = after.iter().find(|t| t.0 == cpu)?;
        let total = b.2.saturating_sub(a.2).max(1);
        Some(b.1.saturating_sub(a.1) as f64 / total as f64)
    };
    // Ties go to the highest-numbered CPU: CPU 0 takes most interrupts.
    cpus.iter()
        .rev()
        .map(|&c| (c, share(c).unwrap_or(1.0)))
        .min_by(|x, y| x.1.total_cmp(&y.1))
}

/// Moves a running process onto `set`.
pub fn pin(pid: Pid, set: &CpuSet) -> nix::Result<()> {
    sched_setaffinity(pid, set)
}

/// How long a process has run and waited to run, in nanoseconds, from
/// `/proc/PID/schedstat`.
pub fn sched_times(pid: Pid) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_may_run_somewhere_and_cpus_are_counted() {
        let cpus = allowed();
        assert!(!cpus.is_empty());
        assert!(cpu_times().iter().any(|t| t.0 == cpus[0] && t.2 >= t.1));
        let (cpu, busy) = least_busy(&cpus, Duration::from_millis(10)).unwrap();
        assert!(cpus.contains(&cpu) && (0.0..=1.0).contains(&busy));
        let (run, _) = sched_times(Pid::this()).expect("schedstat");
        assert!(run > 0);
    }
}
