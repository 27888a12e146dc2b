//! The stand-ins: one node bound per remote name, all in one epoll set.
//! Each lives in one slot; the epoll set carries the slot's number, so
//! that a ready socket leads to its node and name without a second map to
//! keep in step.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use piper_core::{Error, Name, Node, RecvBuf, SocketDir};

/// The stand-ins.
#[derive(Debug)]
pub struct StandIns {
    epoll: Epoll,
    slots: Vec<Option<Node>>,
    free: Vec<usize>,
    by_name: HashMap<Name, usize>,
}

impl StandIns {
    /// None yet.
    pub fn new() -> Result<StandIns, Error> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| Error::io("create", "an epoll set", e))?;
        Ok(StandIns {
            epoll,
            slots: Vec::new(),
            free: Vec::new(),
            by_name: HashMap::new(),
        })
    }

    /// The epoll set's descriptor: readable when a stand-in is.
    pub fn raw_fd(&self) -> RawFd {
        self.epoll.0.as_raw_fd()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// The names stood in for.
    pub fn names(&self) -> impl Iterator<Item = &Name> {
        self.by_name.keys()
    }

    /// Whether `name` is stood in for.
    pub fn contains(&self, name: &Name) -> bool {
        self.by_name.contains_key(name)
    }

    /// The stand-in for `name`.
    pub fn get(&self, name: &Name) -> Option<&Node> {
        self.by_name.get(name).and_then(|&slot| self.slots[slot].as_ref())
    }

    /// Binds a stand-in for `name` in `dir`.
    pub fn bind(&mut self, dir: &SocketDir, name: &Name) -> Result<(), Error> {
        let node = Node::bind(dir, name.clone())?;
        let slot = self.free.pop().unwrap_or(self.slots.len());
        let event = EpollEvent::new(EpollFlags::EPOLLIN, slot as u64);
        self.epoll
            .add(node.as_fd(), event)
            .map_err(|e| Error::io("watch", name, e))?;
        if slot == self.slots.len() {
            self.slots.push(Some(node));
        } else {
            self.slots[slot] = Some(node);
        }
        self.by_name.insert(name.clone(), slot);
        Ok(())
    }

    /// Drops the stand-in for `name` (its socket goes with it), and
    /// returns how many datagrams were queued in it, unread. It refuses
    /// datagrams before it counts them, so that none arrives between the
    /// count and the close: a sender then gets an error, as it would from
    /// a node that is gone.
    pub fn drop_name(&mut self, name: &Name, buf: &mut RecvBuf) -> u64 {
        let Some(slot) = self.by_name.remove(name) else {
            return 0;
        };
        self.free.push(slot);
        let Some(node) = self.slots[slot].take() else {
            return 0;
        };
        let _ = self.epoll.delete(node.as_fd());
        if let Err(e) = node.stop_receiving() {
            log::debug!("{e}");
        }
        let mut unread = 0;
        // A datagram too large to read is still one.
        while let Ok(Some(_)) | Err(Error::Truncated { .. }) = node.try_recv(buf) {
            unread += 1;
        }
        unread
    }

    /// The slots of the stand-ins with a datagram waiting, at most
    /// `events.len()`, into `out`.
    pub fn ready(&self, events: &mut [EpollEvent], out: &mut Vec<usize>) {
        out.clear();
        let n = loop {
            match self.epoll.wait(events, EpollTimeout::ZERO) {
                Ok(n) => break n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("cannot wait on the stand-ins: {e}");
                    break 0;
                }
            }
        };
        out.extend(events[..n].iter().map(|e| e.data() as usize));
    }

    /// The stand-in in `slot`, if it is still there.
    pub fn slot(&self, slot: usize) -> Option<&Node> {
        self.slots.get(slot).and_then(Option::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use piper_core::send_unbound;

    #[test]
    fn a_dropped_stand_in_counts_what_was_queued_and_refuses_the_rest() {
        let path = std::env::temp_dir().join(format!("piper-standins-{}", std::process::id()));
        let dir = SocketDir::open(&path).unwrap();
        let name = Name::new("far").unwrap();
        let mut stand_ins = StandIns::new().unwrap();
        stand_ins.bind(&dir, &name).unwrap();
        for payload in [&b"one"[..], b"two", b"three"] {
            send_unbound(&dir, &name, payload).unwrap();
        }
        let mut buf = RecvBuf::new();
        assert_eq!(stand_ins.drop_name(&name, &mut buf), 3);
        assert!(!stand_ins.contains(&name));
        assert!(!dir.socket_path(&name).unwrap().exists());
        assert!(send_unbound(&dir, &name, b"late").is_err());
        // Dropped twice: nothing the second time.
        assert_eq!(stand_ins.drop_name(&name, &mut buf), 0);
        std::fs::remove_dir(&path).unwrap();
    }
}
