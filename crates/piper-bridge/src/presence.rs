//! Who offers which names: the other bridges' retained `hosts/ID` and
//! `names/ID/NAME` messages, kept as they arrive, and the set of remote
//! names this bridge stands in for. No I/O: the bridge feeds it what the
//! broker says and binds or drops stand-ins as [`Presence::wanted`] says.
//!
//! A name is offered while its bridge is up (`hosts/ID` holds an epoch) and
//! the name's own message carries that same epoch: an earlier run's names,
//! left retained, do not count, and the will on `hosts/ID` withdraws them
//! all at once.
//!
//! After each (re)connection the broker sends every retained message
//! again; what it does not send is gone (a broker restarted without
//! persistence forgets a bridge that died meanwhile). So a connection opens
//! a new generation, and [`Presence::synced`] (when the bridge's own
//! `sync/ID` message comes back, after every retained message) forgets
//! whatever that generation has not confirmed.

use std::collections::{BTreeMap, BTreeSet};

use piper_core::Name;

use crate::wire::Epoch;

/// The most name entries kept, whatever the broker holds: past it, new
/// entries are ignored and counted.
pub const MAX_ENTRIES: usize = 1 << 18;

#[derive(Debug, Default)]
struct Host {
    /// The bridge's current epoch, and the generation that confirmed it.
    up: Option<(Epoch, u64)>,
    /// Its names, with the epoch they were offered in and the generation
    /// that confirmed them.
    names: BTreeMap<Name, (Epoch, u64)>,
}

/// The other bridges' offers.
#[derive(Debug)]
pub struct Presence {
    me: Name,
    hosts: BTreeMap<Name, Host>,
    entries: usize,
    generation: u64,
    /// Entries refused because [`MAX_ENTRIES`] was reached.
    pub ignored: u64,
}

/// The remote names to stand in for, after the cap.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Each name, with the first bridge (by id) that offers it.
    pub names: BTreeMap<Name, Name>,
    /// Names that more than one bridge offers, with two of them.
    pub shared: Vec<(Name, Name, Name)>,
    /// Offered names past the cap: no stand-in.
    pub over_cap: usize,
}

impl Presence {
    /// Nothing known yet; `me` is this bridge's id, whose own messages are
    /// not offers.
    pub fn new(me: Name) -> Presence {
        Presence {
            me,
            hosts: BTreeMap::new(),
            entries: 0,
            generation: 0,
            ignored: 0,
        }
    }

    /// A connection opened: what it does not confirm before
    /// [`Presence::synced`] is forgotten then. Returns the generation, to
    /// be sent in the barrier.
    pub fn reconnected(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// The barrier of `generation` came back: forgets what this connection
    /// has not confirmed. Returns whether anything was forgotten; an old
    /// barrier changes nothing.
    pub fn synced(&mut self, generation: u64) -> bool {
        if generation != self.generation {
            return false;
        }
        let before = self.entries + self.hosts.len();
        for host in self.hosts.values_mut() {
            if host.up.is_some_and(|(_, g)| g < generation) {
                host.up = None;
            }
            host.names.retain(|_, (_, g)| *g >= generation);
        }
        self.hosts.retain(|_, h| h.up.is_some() || !h.names.is_empty());
        self.entries = self.hosts.values().map(|h| h.names.len()).sum();
        before != self.entries + self.hosts.len()
    }

    /// `hosts/ID` says `epoch` (`None`: the bridge is gone). Returns
    /// whether the offers may have changed.
    pub fn host(&mut self, id: Name, epoch: Option<Epoch>) -> bool {
        if id == self.me {
            return false;
        }
        let generation = self.generation;
        match epoch {
            Some(e) => {
                let host = self.hosts.entry(id).or_default();
                let changed = host.up.map(|(old, _)| old) != Some(e);
                host.up = Some((e, generation));
                changed
            }
            None => match self.hosts.get_mut(&id) {
                Some(host) => {
                    let changed = host.up.take().is_some();
                    if host.names.is_empty() {
                        self.hosts.remove(&id);
                    }
                    changed
                }
                None => false,
            },
        }
    }

    /// `names/ID/NAME` says `epoch` (`None`: withdrawn). Returns whether
    /// the offers may have changed.
    pub fn offer(&mut self, id: Name, name: Name, epoch: Option<Epoch>) -> bool {
        if id == self.me {
            return false;
        }
        let generation = self.generation;
        match epoch {
            Some(e) => {
                let host = self.hosts.entry(id.clone()).or_default();
                if !host.names.contains_key(&name) {
                    if self.entries >= MAX_ENTRIES {
                        self.ignored += 1;
                        if host.up.is_none() && host.names.is_empty() {
                            self.hosts.remove(&id);
                        }
                        return false;
                    }
                    self.entries += 1;
                }
                let old = host.names.insert(name, (e, generation));
                old.map(|(e0, _)| e0) != Some(e)
            }
            None => {
                let Some(host) = self.hosts.get_mut(&id) else {
                    return false;
                };
                let changed = host.names.remove(&name).is_some();
                if changed {
                    self.entries -= 1;
                }
                if host.up.is_none() && host.names.is_empty() {
                    self.hosts.remove(&id);
                }
                changed
            }
        }
    }

    /// Bridge `id`'s names that count now.
    #[cfg(test)]
    pub fn offered_by(&self, id: &Name) -> BTreeSet<Name> {
        let Some(host) = self.hosts.get(id) else {
            return BTreeSet::new();
        };
        let Some((epoch, _)) = host.up else {
            return BTreeSet::new();
        };
        (host.names.iter())
            .filter(|(_, (e, _))| *e == epoch)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The bridges that are up.
    #[cfg(test)]
    pub fn hosts_up(&self) -> usize {
        self.hosts.values().filter(|h| h.up.is_some()).count()
    }

    /// The remote names to stand in for: every name a bridge that is up
    /// offers in its current epoch, in name order, at most `cap`.
    pub fn wanted(&self, cap: usize) -> Wanted {
        let mut all: BTreeMap<Name, Name> = BTreeMap::new();
        let mut shared = Vec::new();
        for (id, host) in &self.hosts {
            let Some((epoch, _)) = host.up else { continue };
            for (name, (e, _)) in &host.names {
                if *e != epoch {
                    continue;
                }
                if let Some(first) = all.get(name) {
                    shared.push((name.clone(), first.clone(), id.clone()));
                } else {
                    all.insert(name.clone(), id.clone());
                }
            }
        }
        let over_cap = all.len().saturating_sub(cap);
        let names = all.into_iter().take(cap).collect();
        Wanted {
            names,
            shared,
            over_cap,
        }
    }
}

/// What to change so that the stand-ins are `wanted` minus the names local
/// nodes hold: the names to bind, and those to drop.
pub fn plan<'a>(
    wanted: &'a BTreeMap<Name, Name>,
    bound: impl IntoIterator<Item = &'a Name>,
    local: &BTreeSet<Name>,
) -> (Vec<Name>, Vec<Name>) {
    let bound: BTreeSet<&Name> = bound.into_iter().collect();
    let drop = (bound.iter())
        .filter(|n| !wanted.contains_key(**n) || local.contains(**n))
        .map(|n| (*n).clone())
        .collect();
    let bind = (wanted.keys())
        .filter(|n| !bound.contains(n) && !local.contains(*n))
        .cloned()
        .collect();
    (bind, drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn names(w: &Wanted) -> Vec<&str> {
        w.names.keys().map(Name::as_str).collect()
    }

    #[test]
    fn a_name_counts_only_in_its_bridges_current_epoch() {
        let mut p = Presence::new(n("me"));
        p.reconnected();
        // Names may come before their bridge's state.
        assert!(p.offer(n("b"), n("x"), Some(7)));
        assert!(p.offer(n("b"), n("old"), Some(6)));
        assert_eq!(names(&p.wanted(10)), Vec::<&str>::new());
        assert!(p.host(n("b"), Some(7)));
        assert_eq!(names(&p.wanted(10)), ["x"]);
        // The will: every name goes at once.
        assert!(p.host(n("b"), None));
        assert_eq!(names(&p.wanted(10)), Vec::<&str>::new());
        // A new run: the old names do not count until offered again.
        p.host(n("b"), Some(8));
        assert_eq!(names(&p.wanted(10)), Vec::<&str>::new());
        p.offer(n("b"), n("x"), Some(8));
        assert_eq!(names(&p.wanted(10)), ["x"]);
        assert!(p.offer(n("b"), n("x"), None));
        assert_eq!(names(&p.wanted(10)), Vec::<&str>::new());
    }

    #[test]
    fn this_bridges_own_messages_are_not_offers() {
        let mut p = Presence::new(n("me"));
        assert!(!p.host(n("me"), Some(1)));
        assert!(!p.offer(n("me"), n("x"), Some(1)));
        assert_eq!(p.wanted(10), Wanted::default());
    }

    #[test]
    fn a_reconnection_forgets_what_the_broker_no_longer_holds_once_synced() {
        let mut p = Presence::new(n("me"));
        let g1 = p.reconnected();
        for (id, e) in [("b", 1), ("dead", 2)] {
            p.host(n(id), Some(e));
            p.offer(n(id), n(&format!("{id}-node")), Some(e));
        }
        assert!(!p.synced(g1), "everything was confirmed");
        assert_eq!(names(&p.wanted(10)), ["b-node", "dead-node"]);
        // The broker restarts without its retained messages; b offers again,
        // the dead bridge cannot.
        let g2 = p.reconnected();
        p.host(n("b"), Some(1));
        // Until the barrier, nothing is forgotten (no churn on a reconnect).
        assert_eq!(names(&p.wanted(10)), ["b-node", "dead-node"]);
        p.offer(n("b"), n("b-node"), Some(1));
        assert!(!p.synced(g1), "an old barrier changes nothing");
        assert!(p.synced(g2));
        assert_eq!(names(&p.wanted(10)), ["b-node"]);
        assert_eq!(p.hosts_up(), 1);
    }

    #[test]
    fn the_cap_keeps_the_first_names_and_counts_the_rest() {
        let mut p = Presence::new(n("me"));
        p.host(n("b"), Some(1));
        for k in 0..10 {
            p.offer(n("b"), n(&format!("n{k}")), Some(1));
        }
        let w = p.wanted(4);
        assert_eq!(names(&w), ["n0", "n1", "n2", "n3"]);
        assert_eq!(w.over_cap, 6);
    }

    #[test]
    fn a_name_two_bridges_offer_is_shared() {
        let mut p = Presence::new(n("me"));
        for id in ["a", "b"] {
            p.host(n(id), Some(1));
            p.offer(n(id), n("dup"), Some(1));
        }
        let w = p.wanted(10);
        assert_eq!(w.names.get(&n("dup")), Some(&n("a")));
        assert_eq!(w.shared, [(n("dup"), n("a"), n("b"))]);
    }

    #[test]
    fn entries_past_the_bound_are_ignored_and_counted() {
        let mut p = Presence::new(n("me"));
        p.host(n("b"), Some(1));
        for k in 0..MAX_ENTRIES + 3 {
            p.offer(n("b"), n(&format!("n{k}")), Some(1));
        }
        assert_eq!(p.ignored, 3);
        assert_eq!(p.offered_by(&n("b")).len(), MAX_ENTRIES);
        // A withdrawal makes room again.
        p.offer(n("b"), n("n0"), None);
        assert!(p.offer(n("b"), n("late"), Some(1)));
    }

    #[test]
    fn the_launchers_65536_names_from_one_bridge_are_all_wanted_quickly() {
        let mut p = Presence::new(n("me"));
        p.reconnected();
        p.host(n("b"), Some(1));
        let names: Vec<Name> = (0..65_536).map(|k| n(&format!("node{k}"))).collect();
        let t0 = std::time::Instant::now();
        for name in &names {
            p.offer(n("b"), name.clone(), Some(1));
        }
        let w = p.wanted(65_536);
        assert_eq!((w.names.len(), w.over_cap), (65_536, 0));
        let bound: Vec<Name> = names[..1000].to_vec();
        let (bind, drop) = plan(&w.names, &bound, &BTreeSet::new());
        assert_eq!((bind.len(), drop.len()), (64_536, 0));
        // Debug build, shared machine: the point is no quadratic cost
        // (65,536² steps would take minutes).
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "{:?}", t0.elapsed());
    }

    #[test]
    fn the_plan_binds_what_is_wanted_and_not_local_and_drops_the_rest() {
        let wanted: BTreeMap<Name, Name> = [("x", "b"), ("y", "b"), ("mine", "b")]
            .into_iter()
            .map(|(k, v)| (n(k), n(v)))
            .collect();
        let bound = [n("y"), n("gone"), n("mine")];
        let local: BTreeSet<Name> = [n("mine")].into_iter().collect();
        let (bind, drop) = plan(&wanted, &bound, &local);
        assert_eq!(bind, [n("x")]);
        assert_eq!(drop, [n("gone"), n("mine")]);
    }
}
