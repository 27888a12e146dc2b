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

use std::time::{Duration, Instant};

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use piper_launch::cli::Cpus;

/// How often `auto` looks at the CPU the ring is packed on.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// A CPU busier than this (share of its time) is not one to pack onto.
const BUSY: f64 = 0.5;

/// Others taking more than this share of the packed CPU make `auto` move.
const OTHERS: f64 = 0.25;

/// How many of the ring's nodes `auto` reads the run times of.
const SAMPLE: usize = 64;

/// Where a ring's nodes run: decided at launch, revised by `auto`.
#[derive(Debug)]
pub struct Placer {
    /// Each node's CPU set, or none (the scheduler's choice).
    sets: Vec<Option<CpuSet>>,
    /// auto: the CPU the ring is packed on now, if it is.
    packed: Option<usize>,
    /// auto places a launching node once it is ready rather than before it
    /// runs: a thousand nodes starting on one CPU took half as long again to
    /// be ready (0.85 s against 0.57 s here). Restarts are placed at once.
    when_ready: bool,
    launched: bool,
    /// What the sampled nodes had run (ns), and the CPUs' times, at the
    /// last look.
    ran: u64,
    looked: (Instant, Vec<(usize, u64, u64)>),
}

impl Placer {
    /// Decides where each of `n` nodes runs, before any starts.
    pub fn new(policy: &Cpus, n: usize) -> Placer {
        let allowed = allowed();
        let mut placer = Placer {
            sets: vec![None; n],
            packed: None,
            when_ready: false,
            launched: false,
            ran: 0,
            looked: (Instant::now(), Vec::new()),
        };
        placer.sets = match policy {
            Cpus::None => vec![None; n],
            Cpus::Pack | Cpus::Auto => {
                let least = least_busy(&allowed, Duration::from_millis(30));
                let cpu = match (least, policy) {
                    // auto does not pack onto a CPU that is busy already.
                    (Some((_, busy)), Cpus::Auto) if busy > BUSY => {
                        log::debug!("every CPU is busy: leaving the ring to the scheduler");
                        None
                    }
                    (Some((cpu, _)), Cpus::Auto) => {
                        log::debug!("packing the ring onto CPU {cpu}");
                        placer.packed = Some(cpu);
                        placer.when_ready = true;
                        Some(cpu)
                    }
                    (least, _) => least.map(|(cpu, _)| cpu),
                };
                vec![cpu.map(|c| set_of(&[c])); n]
            }
            Cpus::Spread => (0..n)
                .map(|i| allowed.get(i % allowed.len().max(1)).map(|&c| set_of(&[c])))
                .collect(),
            Cpus::List(cpus) => vec![Some(set_of(cpus)); n],
        };
        placer
    }

    /// Where node `i` is placed in the child, before it runs.
    pub fn before_exec(&self, i: usize) -> Option<CpuSet> {
        match self.when_ready && !self.launched {
            true => None,
            false => self.sets[i],
        }
    }

    /// Node `i`, `pid`, said READY=1: placed now if it was not before.
    pub fn ready(&self, i: usize, pid: Pid) {
        if let (true, false, Some(set)) = (self.when_ready, self.launched, &self.sets[i]) {
            let _ = pin(pid, set);
        }
    }

    /// The ring is ready: from now on every node is placed before it runs,
    /// and auto starts watching, from what the ring's nodes (`alive`) have
    /// run so far, so that its first look can already judge (a trap is
    /// found in one look, 0.1 s, not two).
    pub fn launched(&mut self, alive: &[Pid]) {
        self.launched = true;
        self.ran = ran_by(alive);
        self.looked = (Instant::now(), cpu_times());
    }

    /// When auto looks next, if it watches a packed ring.
    pub fn next_look(&self) -> Option<Instant> {
        self.packed
            .filter(|_| self.launched)
            .map(|_| self.looked.0 + LOOK_EVERY)
    }

    /// `auto`: whether something else uses the CPU the ring is packed on.
    /// That CPU's busy time, less what the ring's nodes ran there (from a
    /// sample of up to [`SAMPLE`] of them, scaled to the ring), is what the others
    /// took. (How long nodes wait to run says little: in a packed ring each
    /// woken node waits for its waker to go to sleep, a third of the time.)
    /// When others take more than a quarter of it, the ring moves to a CPU
    /// that is mostly idle, or, if none is, is left to the scheduler:
    /// packing must never be a trap. `alive` are the ring's live nodes.
    pub fn look(&mut self, alive: &[Pid]) {
        let Some(cpu) = self.packed else { return };
        let ran = ran_by(alive);
        let ran0 = std::mem::replace(&mut self.ran, ran);
        let now = (Instant::now(), cpu_times());
        let (then, last) = std::mem::replace(&mut self.looked, now.clone());
        let Some(ring_share) = ring_share(ran0, ran, alive.len(), now.0 - then) else {
            return; // just moved (or nothing had run): nothing to compare with yet
        };
        let shares: Vec<(usize, f64)> = allowed()
            .into_iter()
            .filter_map(|c| Some((c, busy_share(&last, &now.1, c)?)))
            .collect();
        let set = match verdict(cpu, ring_share, &shares) {
            Verdict::Stay => return,
            Verdict::Move { others, to } => {
                log::debug!(
                    "others took {:.0}% of CPU {cpu}: moving the ring to CPU {to}",
                    others * 100.0
                );
                self.packed = Some(to);
                set_of(&[to])
            }
            Verdict::Unpack { others } => {
                log::debug!(
                    "others took {:.0}% of CPU {cpu}, and no CPU is idle: leaving the ring to the scheduler",
                    others * 100.0
                );
                self.packed = None;
                set_of(&allowed())
            }
        };
        for &pid in alive {
            let _ = pin(pid, &set);
        }
        let keep = self.packed.map(|_| set);
        self.sets = vec![keep; self.sets.len()];
        self.ran = 0;
    }

    /// The ring is going: `auto` spreads its packed nodes (`alive`) over
    /// every CPU, so that they exit on all at once (a thousand exiting on
    /// one CPU took 0.21 s to tear down against 0.13 s spread). Letting them
    /// run anywhere is not enough: woken together, they wake where they
    /// slept. A placement the user asked for stays.
    pub fn release(&mut self, alive: &[Pid]) {
        if self.packed.take().is_none() {
            return;
        }
        let cpus = allowed();
        for (&pid, &cpu) in alive.iter().zip(cpus.iter().cycle()) {
            let _ = pin(pid, &set_of(&[cpu]));
        }
    }
}

/// What `auto` does about the CPU its ring is packed on.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Verdict {
    /// Nobody else wants it (much).
    Stay,
    /// Others took `others` of it; CPU `to` is mostly idle.
    Move { others: f64, to: usize },
    /// Others took `others` of it, and no other CPU is mostly idle.
    Unpack { others: f64 },
}

/// Judges packed `cpu`, of which the ring took `ring_share`, from every
/// allowed CPU's busy share over the same time (`shares`).
fn verdict(cpu: usize, ring_share: f64, shares: &[(usize, f64)]) -> Verdict {
    let busy = shares.iter().find(|s| s.0 == cpu).map_or(0.0, |s| s.1);
    let others = busy - ring_share;
    if others <= OTHERS {
        return Verdict::Stay;
    }
    let quiet = shares
        .iter()
        .filter(|s| s.0 != cpu)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .filter(|s| s.1 < BUSY);
    match quiet {
        Some(&(to, _)) => Verdict::Move { others, to },
        None => Verdict::Unpack { others },
    }
}

/// The share of a CPU's time that a ring of `alive` nodes took over
/// `elapsed`, from what the first [`SAMPLE`] of them had run (ns) at the
/// last look (`ran0`) and now (`ran`), scaled to the ring. `None` when there
/// is nothing to compare with: nothing had run then (the ring had just
/// moved, when the count starts again), or there is no node.
fn ring_share(ran0: u64, ran: u64, alive: usize, elapsed: Duration) -> Option<f64> {
    let sampled = alive.min(SAMPLE);
    if ran0 == 0 || sampled == 0 {
        return None;
    }
    let ring = ran.saturating_sub(ran0) as f64 / 1e9 * alive as f64 / sampled as f64;
    Some(ring / elapsed.as_secs_f64().max(1e-3))
}

/// What the first [`SAMPLE`] of `alive` have run, in ns.
fn ran_by(alive: &[Pid]) -> u64 {
    alive[..alive.len().min(SAMPLE)]
        .iter()
        .filter_map(|&pid| sched_times(pid))
        .map(|t| t.0)
        .sum()
}

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
    parse_stat(&std::fs::read_to_string("/proc/stat").unwrap_or_default())
}

/// `(cpu, busy, total)` from the `cpuN` lines of `/proc/stat`'s text.
fn parse_stat(stat: &str) -> Vec<(usize, u64, u64)> {
    stat.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let cpu: usize = fields.next()?.strip_prefix("cpu")?.parse().ok()?;
            let ticks: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
            let total: u64 = ticks.iter().sum();
            // idle and iowait are not busy.
            let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
            Some((cpu, total.saturating_sub(idle), total))
        })
        .collect()
}

/// The least busy of `cpus` over `sample`, and its busy share.
pub fn least_busy(cpus: &[usize], sample: Duration) -> Option<(usize, f64)> {
    let before = cpu_times();
    std::thread::sleep(sample);
    least_busy_of(cpus, &before, &cpu_times())
}

/// The least busy of `cpus` between two [`cpu_times`]; a CPU missing from
/// either counts as fully busy.
fn least_busy_of(cpus: &[usize], before: &[(usize, u64, u64)], after: &[(usize, u64, u64)]) -> Option<(usize, f64)> {
    // Ties go to the highest-numbered CPU: CPU 0 takes most interrupts.
    cpus.iter()
        .rev()
        .map(|&c| (c, busy_share(before, after, c).unwrap_or(1.0)))
        .min_by(|x, y| x.1.total_cmp(&y.1))
}

/// The share of `cpu`'s time that was busy between two [`cpu_times`].
fn busy_share(before: &[(usize, u64, u64)], after: &[(usize, u64, u64)], cpu: usize) -> Option<f64> {
    let a = before.iter().find(|t| t.0 == cpu)?;
    let b = after.iter().find(|t| t.0 == cpu)?;
    Some(b.1.saturating_sub(a.1) as f64 / b.2.saturating_sub(a.2).max(1) as f64)
}

/// Moves a running process onto `set`.
pub fn pin(pid: Pid, set: &CpuSet) -> nix::Result<()> {
    sched_setaffinity(pid, set)
}

/// How long a process has run and waited to run, in nanoseconds, from
/// `/proc/PID/schedstat`.
pub fn sched_times(pid: Pid) -> Option<(u64, u64)> {
    parse_schedstat(&std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?)
}

/// `(run, wait)` from `/proc/PID/schedstat`'s text.
fn parse_schedstat(text: &str) -> Option<(u64, u64)> {
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

    // /proc/stat: user nice system idle iowait irq softirq steal guest guest_nice.
    const STAT: &str = "cpu  30 0 10 900 60 0 0 0 0 0\n\
                        cpu0 10 0 5 400 30 0 5 0 0 0\n\
                        cpu1 20 0 5 500 30 0 0 0 0 0\n\
                        intr 12345 0 1\n\
                        cpufreq 7\n";

    #[test]
    fn busy_is_all_but_idle_and_iowait_per_cpu() {
        assert_eq!(parse_stat(STAT), vec![(0, 20, 450), (1, 25, 555)]);
        assert_eq!(parse_stat(""), vec![]);
    }

    #[test]
    fn the_least_busy_cpu_wins_and_ties_go_to_the_highest() {
        let before = parse_stat(STAT);
        // CPU 0: 30 of 100 jiffies busy; CPU 1: 10 of 100.
        let after = vec![(0, 50, 550), (1, 35, 655)];
        assert_eq!(busy_share(&before, &after, 0), Some(0.3));
        assert_eq!(busy_share(&before, &after, 1), Some(0.1));
        assert_eq!(busy_share(&before, &after, 2), None);
        assert_eq!(least_busy_of(&[0, 1], &before, &after), Some((1, 0.1)));
        // A CPU missing from the samples counts as fully busy.
        assert_eq!(least_busy_of(&[0, 2], &before, &after), Some((0, 0.3)));
        // No time passed: nothing was busy, and the tie goes to CPU 1.
        assert_eq!(least_busy_of(&[0, 1], &before, &before), Some((1, 0.0)));
        assert_eq!(least_busy_of(&[], &before, &after), None);
    }

    #[test]
    fn the_rings_share_is_what_its_sample_ran_scaled_to_the_ring() {
        let ms = Duration::from_millis;
        let near = |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() < 1e-9);
        // 4 nodes, all sampled, ran 50 ms in 200 ms: a quarter of a CPU.
        assert!(near(ring_share(1_000_000_000, 1_050_000_000, 4, ms(200)), 0.25));
        // 128 nodes, 64 sampled: the sample's 50 ms stand for 100 ms.
        assert!(near(ring_share(1_000_000_000, 1_050_000_000, 128, ms(200)), 0.5));
        // A count that went back (a sampled node was replaced) is nothing run.
        assert_eq!(ring_share(2_000_000, 1_000_000, 4, ms(100)), Some(0.0));
        // No time between the looks is taken as a millisecond.
        assert!(near(ring_share(1_000_000, 1_500_000, 1, Duration::ZERO), 0.5));
        // Nothing to compare with: just moved, or no node.
        assert_eq!(ring_share(0, 1_050_000_000, 4, ms(200)), None);
        assert_eq!(ring_share(1_000_000, 2_000_000, 0, ms(200)), None);
    }

    #[test]
    fn auto_stays_while_others_take_a_quarter_or_less() {
        // The CPU is 90% busy, 70% of it the ring's: others took 20%.
        assert_eq!(verdict(1, 0.7, &[(0, 0.1), (1, 0.9)]), Verdict::Stay);
        // Exactly a quarter is still not a reason to move.
        assert_eq!(verdict(1, 0.5, &[(0, 0.1), (1, 0.75)]), Verdict::Stay);
        // A CPU missing from the shares counts as idle: nothing to flee.
        assert_eq!(verdict(1, 0.0, &[(0, 0.1)]), Verdict::Stay);
    }

    #[test]
    fn auto_moves_to_the_quietest_other_cpu_if_it_is_mostly_idle() {
        let shares = [(0, 0.3), (1, 1.0), (2, 0.2), (3, 0.6)];
        let Verdict::Move { others, to } = verdict(1, 0.5, &shares) else {
            panic!("{:?}", verdict(1, 0.5, &shares));
        };
        assert_eq!(to, 2);
        assert!((others - 0.5).abs() < 1e-9, "{others}");
        // The packed CPU itself is never the quiet one, however its share reads.
        assert!(matches!(
            verdict(0, -1.0, &[(0, 0.0), (1, 0.4)]),
            Verdict::Move { to: 1, .. }
        ));
    }

    #[test]
    fn auto_unpacks_when_no_other_cpu_is_mostly_idle() {
        // The other CPU is busy half its time: not idle enough to move to.
        let Verdict::Unpack { others } = verdict(1, 0.2, &[(0, 0.5), (1, 1.0)]) else {
            panic!("{:?}", verdict(1, 0.2, &[(0, 0.5), (1, 1.0)]));
        };
        assert!((others - 0.8).abs() < 1e-9, "{others}");
        // A single CPU: nowhere to go.
        assert!(matches!(verdict(0, 0.1, &[(0, 1.0)]), Verdict::Unpack { .. }));
    }

    /// Sleeping children, killed and reaped however the test ends.
    struct Sleepers(Vec<std::process::Child>);

    impl Drop for Sleepers {
        fn drop(&mut self) {
            for child in &mut self.0 {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    fn cpus_of(pid: Pid) -> Vec<usize> {
        let set = sched_getaffinity(pid).unwrap();
        (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap()).collect()
    }

    #[test]
    fn release_spreads_a_packed_ring_over_every_cpu_and_leaves_a_chosen_placement() {
        let cpus = allowed();
        let sleep = || std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let sleepers = Sleepers((0..3).map(|_| sleep()).collect());
        let pids: Vec<Pid> = sleepers.0.iter().map(|c| Pid::from_raw(c.id() as i32)).collect();
        for &pid in &pids {
            pin(pid, &set_of(&[cpus[0]])).unwrap();
        }
        // Not packed by auto (here --cpus none): where they are, they stay.
        let mut placer = Placer::new(&Cpus::None, pids.len());
        placer.release(&pids);
        assert!(pids.iter().all(|&pid| cpus_of(pid) == [cpus[0]]));
        // Packed by auto: one CPU each, round the allowed ones, and no more
        // looks at a ring that is going.
        placer.packed = Some(cpus[0]);
        placer.launched = true;
        placer.release(&pids);
        for (k, &pid) in pids.iter().enumerate() {
            assert_eq!(cpus_of(pid), [cpus[k % cpus.len()]]);
        }
        assert_eq!(placer.next_look(), None);
    }

    #[test]
    fn schedstat_is_run_then_wait() {
        assert_eq!(parse_schedstat("123456 7890 42\n"), Some((123456, 7890)));
        assert_eq!(parse_schedstat("123456\n"), None);
        assert_eq!(parse_schedstat("x 1 2\n"), None);
    }
}
