//! The flags every piper binary takes the same way: where the sockets are
//! (`--dir`, `--abstract`) and whom a node trusts (`--allow-uid`). A
//! binary flattens [`Sockets`] into its own arguments, so the flags, their
//! help and their meaning are written once.
//!
//! ```
//! use clap::Parser;
//! use piper_cli::args::Sockets;
//!
//! #[derive(Parser)]
//! struct Args {
//!     #[command(flatten)]
//!     sockets: Sockets,
//! }
//!
//! let args = Args::parse_from(["prog", "--dir", "/run/p", "--abstract", "--allow-uid", "7"]);
//! assert_eq!(args.sockets.namespace(), piper_core::Namespace::Abstract);
//! assert_eq!(args.sockets.path(), std::path::Path::new("/run/p"));
//! assert_eq!(args.sockets.policy().allow, [7]);
//! ```

use std::path::PathBuf;

use piper_core::trust::Policy;
use piper_core::{Name, Namespace, SocketDir};

/// The socket directory, its namespace, and the trust policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct Sockets {
    /// Socket directory [env: PIPER_DIR] [default: $XDG_RUNTIME_DIR/piper, else /dev/shm/piper-$UID, else /tmp/piper-$UID].
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub dir: Option<PathBuf>,
    /// Use Linux abstract addresses (@DIR/piper-NAME) instead of socket files.
    #[arg(long = "abstract")]
    pub abstract_ns: bool,
    /// Also accept datagrams from this uid (repeatable); our own uid and root always are.
    #[arg(long = "allow-uid", value_name = "UID")]
    pub allow_uids: Vec<u32>,
}

impl Sockets {
    /// `--abstract`, or socket files.
    pub fn namespace(&self) -> Namespace {
        match self.abstract_ns {
            true => Namespace::Abstract,
            false => Namespace::Filesystem,
        }
    }

    /// `--dir`, else the default ([`SocketDir::default_path`]).
    pub fn path(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(SocketDir::default_path)
    }

    /// Opens the directory in its namespace for the nodes `names`,
    /// creating it if need be ([`SocketDir::open_for`]: a name that cannot
    /// fit is said before anything is made).
    pub fn open_for<'a>(&self, names: impl IntoIterator<Item = &'a Name>) -> piper_core::Result<SocketDir> {
        SocketDir::open_for(self.path(), self.namespace(), names)
    }

    /// Opens the directory without creating anything: for commands that
    /// only look or only send. An abstract directory is never created
    /// anyway.
    pub fn open_existing(&self) -> piper_core::Result<SocketDir> {
        match self.namespace() {
            Namespace::Filesystem => SocketDir::open_existing(self.path()),
            Namespace::Abstract => SocketDir::open_abstract(self.path()),
        }
    }

    /// The trust policy: this process's user, root, and `--allow-uid`.
    pub fn policy(&self) -> Policy {
        Policy::new(self.allow_uids.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(flatten)]
        sockets: Sockets,
    }

    #[test]
    fn without_flags_the_default_directory_in_files_and_no_one_else_is_trusted() {
        let args = Args::parse_from(["prog"]);
        assert_eq!(args.sockets, Sockets::default());
        assert_eq!(args.sockets.namespace(), Namespace::Filesystem);
        assert_eq!(args.sockets.path(), SocketDir::default_path());
        assert!(args.sockets.policy().allow.is_empty());
    }

    #[test]
    fn the_flags_say_where_in_which_namespace_and_whom_to_trust() {
        let args = Args::parse_from(["prog", "--allow-uid=5", "--dir=/x", "--abstract", "--allow-uid", "6"]);
        assert_eq!(args.sockets.namespace(), Namespace::Abstract);
        assert_eq!(args.sockets.path(), PathBuf::from("/x"));
        let policy = args.sockets.policy();
        assert_eq!((policy.me, policy.allow), (nix::unistd::geteuid().as_raw(), vec![5, 6]));
        assert!(Args::try_parse_from(["prog", "--allow-uid", "x"]).is_err());
    }

    #[test]
    fn an_abstract_directory_opens_without_a_file_and_a_missing_one_is_not_made() {
        let path = std::env::temp_dir().join(format!("piper-cli-args-{}/missing", std::process::id()));
        let abs = Sockets {
            dir: Some(path.clone()),
            abstract_ns: true,
            allow_uids: vec![],
        };
        assert_eq!(abs.open_existing().unwrap().namespace(), Namespace::Abstract);
        let files = Sockets {
            abstract_ns: false,
            ..abs
        };
        assert!(files.open_existing().is_err());
        assert!(!path.exists());
    }
}
