//! Whom a node takes datagrams from: the README's trust rule, in one place.
//!
//! A datagram is trusted when the kernel vouches for its sender (its
//! `SCM_CREDENTIALS` name a real process, or the node's socket file admits
//! no one else: see [`Node::trust_file_permissions`](crate::Node::trust_file_permissions))
//! and the sender runs as the node's own user, as root, or as a user the
//! node allows besides (`--allow-uid`). Otherwise a datagram without
//! credentials is never trusted: it was queued before `SO_PASSCRED` was
//! set, and nobody vouches for where it came from.
//!
//! ```
//! use piper_core::trust::Policy;
//! use piper_core::{Name, Node, RecvBuf, SocketDir};
//!
//! let tmp = std::env::temp_dir().join(format!("piper-doc-trust-{}", std::process::id()));
//! let dir = SocketDir::open(&tmp)?;
//! let a = Node::bind(&dir, Name::new("a")?)?;
//! let b = Node::bind(&dir, Name::new("b")?)?;
//! a.send_to(b.name(), b"hello")?;
//!
//! let policy = Policy::new([]);
//! let mut buf = RecvBuf::new();
//! let msg = b.recv(&mut buf)?.expect("a datagram");
//! assert!(msg.trusted(&policy), "our own user");
//! # drop((a, b)); std::fs::remove_dir(&tmp).unwrap();
//! # Ok::<(), piper_core::Error>(())
//! ```

use crate::node::{Credentials, Datagram};

/// The users a node trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The node's own user id (effective).
    pub me: u32,
    /// Users trusted besides the node's own and root.
    pub allow: Vec<u32>,
}

impl Policy {
    /// This process's policy: its effective uid, root, and `allow`.
    pub fn new(allow: impl IntoIterator<Item = u32>) -> Policy {
        Policy {
            me: nix::unistd::geteuid().as_raw(),
            allow: allow.into_iter().collect(),
        }
    }

    /// Whether a sender with `creds` (or none) is trusted.
    pub fn trusts(&self, creds: Option<Credentials>) -> bool {
        creds.is_some_and(|c| c.trusted(self))
    }

    /// Whether a sender of user `uid` is trusted: our own user, root, or an
    /// allowed user.
    pub fn trusts_uid(&self, uid: u32) -> bool {
        uid == self.me || uid == 0 || self.allow.contains(&uid)
    }
}

/// This process's user and root, no one else.
impl Default for Policy {
    fn default() -> Policy {
        Policy::new([])
    }
}

impl Credentials {
    /// Whether these credentials name a process: the kernel reports pid 0
    /// (and the overflow uid and gid, 65534) for a datagram that carries
    /// none, which must not pass for the user nobody.
    pub fn vouched(&self) -> bool {
        self.pid != 0
    }

    /// Whether `policy` trusts this sender: credentials that name a
    /// process, of our own user, root, or an allowed user.
    pub fn trusted(&self, policy: &Policy) -> bool {
        self.vouched() && policy.trusts_uid(self.uid)
    }
}

impl Datagram<'_> {
    /// Whether `policy` trusts this datagram's sender. A datagram without
    /// credentials is trusted only where the node relies on its socket
    /// file's permissions ([`Node::trust_file_permissions`](crate::Node::trust_file_permissions)):
    /// then its sender is the file's owner or root, and trusted as such.
    pub fn trusted(&self, policy: &Policy) -> bool {
        match (self.creds, self.owner_only) {
            (Some(_), _) => policy.trusts(self.creds),
            (None, Some(uid)) => policy.trusts_uid(uid),
            (None, None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOBODY: u32 = 65534;

    fn creds(pid: i32, uid: u32) -> Option<Credentials> {
        Some(Credentials { pid, uid, gid: uid })
    }

    #[test]
    fn our_own_user_root_and_allowed_users_are_trusted_and_no_one_else() {
        let policy = Policy {
            me: 1000,
            allow: vec![2000],
        };
        assert!(policy.trusts(creds(42, 1000)));
        assert!(policy.trusts(creds(42, 0)));
        assert!(policy.trusts(creds(42, 2000)));
        assert!(!policy.trusts(creds(42, 3000)));
        assert!(!policy.trusts(creds(42, NOBODY)));
        assert!(!policy.trusts(None));
    }

    #[test]
    fn credentials_with_pid_0_are_none_even_for_a_node_running_as_nobody() {
        // What the kernel reports for a datagram queued before SO_PASSCRED
        // was set: pid 0, and the overflow uid and gid.
        let policy = Policy {
            me: NOBODY,
            allow: vec![],
        };
        assert!(!policy.trusts(creds(0, NOBODY)));
        assert!(!policy.trusts(creds(0, 0)), "nor root's");
        assert!(policy.trusts(creds(7, NOBODY)), "a real process of our own user is");
        let allowing = Policy {
            me: 1000,
            allow: vec![NOBODY],
        };
        assert!(!allowing.trusts(creds(0, NOBODY)));
    }

    #[test]
    fn the_policy_of_this_process_is_its_effective_uid() {
        let policy = Policy::new([5, 6]);
        assert_eq!(policy.me, nix::unistd::geteuid().as_raw());
        assert_eq!(policy.allow, [5, 6]);
        assert_eq!(Policy::default(), Policy::new([]));
    }
}
