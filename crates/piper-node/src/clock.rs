//! The message path's clock.
//!
//! A node takes the time of every message it handles: its active span, and
//! the deadlines of `STATUS=`, `WATCHDOG=1` and the socket file's recheck.
//! Reading the system clock (the vDSO: no system call, but its code and
//! data are two more pages for a cache-cold process to walk to) costs a
//! ring of a thousand processes a tenth of its speed. Where the CPU's
//! time-stamp counter runs at a constant rate (x86-64 with an invariant
//! TSC), the time of a message is worked out from the counter, which
//! touches no memory, and the system clock is read again only every
//! [`REREAD`] (and at least every [`MAX_DERIVED`] messages), which also
//! keeps the counter's rate calibrated. Elsewhere the clock is read every
//! time.

use std::time::{Duration, Instant};

/// How long times are worked out from the counter before the system clock
/// is read again. An NTP slew (at most 500 ppm) moves the two apart by at
/// most 125 µs in this time.
pub const REREAD: Duration = Duration::from_millis(250);

/// At most this many times are worked out in a row: a counter that stopped
/// or jumped cannot hold the node's clock still for longer.
pub const MAX_DERIVED: u32 = 1000;

/// How long apart two readings must be to calibrate the counter's rate.
pub const CALIBRATION: Duration = Duration::from_millis(100);

/// The time, from the counter where it can stand in for the system clock.
#[derive(Debug)]
pub struct Clock {
    /// Whether the counter may stand in: unknown until the first reading.
    counter: Option<bool>,
    /// The first reading: the counter then, and the time.
    base: Option<(u64, Instant)>,
    /// The last reading.
    last: Option<(u64, Instant)>,
    /// Counter ticks per second, once two readings are far enough apart.
    per_sec: Option<f64>,
    /// Times worked out since the last reading.
    derived: u32,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            counter: None,
            base: None,
            last: None,
            per_sec: None,
            derived: 0,
        }
    }

    /// The time now.
    pub fn now(&mut self) -> Instant {
        let counter = *self.counter.get_or_insert_with(invariant_counter);
        let ticks = if counter { read_counter() } else { None };
        self.now_at(ticks, Instant::now)
    }

    /// The time at counter value `ticks` (none: no counter), from the
    /// counter if it may stand in, else from `read`, the system clock.
    fn now_at(&mut self, ticks: Option<u64>, read: impl FnOnce() -> Instant) -> Instant {
        let Some(ticks) = ticks else { return read() };
        if let (Some((at, time)), Some(per_sec)) = (self.last, self.per_sec) {
            let since = Duration::from_secs_f64(ticks.wrapping_sub(at) as f64 / per_sec);
            if ticks >= at && since < REREAD && self.derived < MAX_DERIVED {
                self.derived += 1;
                return time + since;
            }
        }
        let now = read();
        self.derived = 0;
        self.last = Some((ticks, now));
        match self.base {
            None => self.base = Some((ticks, now)),
            Some((at, time)) if ticks > at && now.duration_since(time) >= CALIBRATION => {
                self.per_sec = Some((ticks - at) as f64 / now.duration_since(time).as_secs_f64());
            }
            // The counter went back (or stood still): start again from here.
            Some((at, _)) if ticks <= at => {
                self.base = Some((ticks, now));
                self.per_sec = None;
            }
            Some(_) => {}
        }
        now
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// Whether the CPU's time-stamp counter runs at a constant rate whatever
/// the CPU's power state (CPUID 0x8000_0007: EDX bit 8, "invariant TSC"),
/// as Linux requires before it makes the counter its clock.
#[cfg(target_arch = "x86_64")]
fn invariant_counter() -> bool {
    let max = std::arch::x86_64::__cpuid(0x8000_0000).eax;
    max >= 0x8000_0007 && std::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) != 0
}

#[cfg(not(target_arch = "x86_64"))]
fn invariant_counter() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn read_counter() -> Option<u64> {
    // SAFETY: RDTSC reads a register and has no preconditions; the
    // intrinsic is unsafe only as every intrinsic once was.
    Some(unsafe { std::arch::x86_64::_rdtsc() })
}

#[cfg(not(target_arch = "x86_64"))]
fn read_counter() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A system clock the test moves, and a counter at 1 GHz beside it.
    struct Fake {
        t0: Instant,
        at: Duration,
        reads: u32,
    }

    impl Fake {
        fn ticks(&self) -> u64 {
            self.at.as_nanos() as u64
        }
    }

    fn now(clock: &mut Clock, fake: &mut Fake) -> Instant {
        let ticks = Some(fake.ticks());
        let time = fake.t0 + fake.at;
        clock.now_at(ticks, || {
            fake.reads += 1;
            time
        })
    }

    #[test]
    fn without_a_counter_every_time_is_read() {
        let mut clock = Clock::new();
        let t0 = Instant::now();
        let mut reads = 0;
        for k in 0..5 {
            let at = t0 + Duration::from_millis(k);
            assert_eq!(
                clock.now_at(None, || {
                    reads += 1;
                    at
                }),
                at
            );
        }
        assert_eq!(reads, 5);
    }

    #[test]
    fn once_calibrated_the_counter_gives_the_time_and_the_clock_is_read_every_reread() {
        let mut clock = Clock::new();
        let mut fake = Fake {
            t0: Instant::now(),
            at: Duration::ZERO,
            reads: 0,
        };
        // Uncalibrated: every time is read, until two readings are a
        // calibration apart.
        for _ in 0..3 {
            now(&mut clock, &mut fake);
            fake.at += CALIBRATION / 2;
        }
        assert_eq!(fake.reads, 3);
        assert!(
            clock.per_sec.is_some_and(|r| (r - 1e9).abs() < 1.0),
            "{:?}",
            clock.per_sec
        );
        // Calibrated: a message every millisecond for two seconds; each time
        // is right, and the clock is read once per REREAD.
        let reads = fake.reads;
        for _ in 0..2000 {
            fake.at += Duration::from_millis(1);
            let time = now(&mut clock, &mut fake);
            let want = fake.t0 + fake.at;
            let error = if time > want { time - want } else { want - time };
            assert!(error < Duration::from_micros(1), "{error:?}");
        }
        let per_reread = REREAD.as_millis() as u32;
        assert_eq!(fake.reads - reads, 2000 / per_reread);
    }

    #[test]
    fn a_counter_that_stops_or_goes_back_holds_the_clock_for_a_bounded_time() {
        let mut clock = Clock::new();
        let mut fake = Fake {
            t0: Instant::now(),
            at: Duration::from_secs(1),
            reads: 0,
        };
        now(&mut clock, &mut fake);
        fake.at += CALIBRATION;
        now(&mut clock, &mut fake);
        // The counter stops while time goes on: read again after at most
        // MAX_DERIVED times, and then the time is right again.
        let stuck = Some(fake.ticks());
        let reads = fake.reads;
        for _ in 0..MAX_DERIVED + 1 {
            fake.at += Duration::from_micros(10);
            let time = fake.t0 + fake.at;
            clock.now_at(stuck, || {
                fake.reads += 1;
                time
            });
        }
        assert_eq!(fake.reads - reads, 1);
        // It goes back: read at once, and calibrated again from there.
        let back = Some(0);
        let time = fake.t0 + fake.at;
        assert_eq!(clock.now_at(back, || time), time);
        assert_eq!(clock.per_sec, None);
    }

    #[test]
    fn the_counter_is_taken_only_where_it_runs_at_a_constant_rate() {
        // On this machine's CPU, whatever it is: the answer is a bool, and
        // a counter is read only where it is true.
        let counter = invariant_counter();
        assert_eq!(read_counter().is_some(), cfg!(target_arch = "x86_64"));
        let mut clock = Clock::new();
        let before = Instant::now();
        let now = clock.now();
        assert!(now >= before && clock.counter == Some(counter));
    }
}
