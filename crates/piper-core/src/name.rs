//! Node names: the one place the naming rules live.
//!
//! A name is what a node is called and what travels in the seed's payloads, so
//! it is also untrusted input: the rules below are what keeps a payload from
//! ever becoming a path outside the socket directory.

use std::fmt;

use crate::error::{Error, Result};

/// The longest name any directory could hold: `sun_path` is 108 bytes, less the
/// NUL, less `/piper-`. A real directory leaves less; see
/// [`SocketDir::max_name_len`](crate::SocketDir::max_name_len).
pub const MAX_NAME_LEN: usize = 107 - "/piper-".len();

/// A valid node name: 1 or more bytes of `[A-Za-z0-9._-]`, not `.` or `..`.
///
/// ```
/// use piper_core::Name;
///
/// let ping = Name::new("ping").unwrap();
/// assert_eq!(ping.as_str(), "ping");
/// assert!(Name::new("../etc").is_err());
/// assert!(Name::from_bytes(b"a\0b").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// Checks `name` against the naming rules.
    pub fn new(name: &str) -> Result<Name> {
        Name::from_bytes(name.as_bytes())
    }

    /// Checks raw bytes, such as a received payload, against the naming rules.
    pub fn from_bytes(bytes: &[u8]) -> Result<Name> {
        let rule = if bytes.is_empty() {
            Some("a name must not be empty")
        } else if bytes == b"." || bytes == b".." {
            Some("'.' and '..' are not names")
        } else if bytes.len() > MAX_NAME_LEN {
            Some("a name must fit in a socket address (at most 100 bytes)")
        } else if !bytes.iter().all(|&b| is_name_byte(b)) {
            Some("only letters, digits, '.', '_' and '-' are allowed")
        } else {
            None
        };
        match rule {
            Some(rule) => Err(Error::InvalidName {
                name: shorten(bytes),
                rule,
            }),
            // Every byte is ASCII, so this is valid UTF-8.
            None => Ok(Name(String::from_utf8_lossy(bytes).into_owned())),
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as bytes, as it travels in a payload.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// An untrusted name for an error message: escaped, and cut after 48 bytes
/// so that a 200 KiB payload still makes a one-line warning.
fn shorten(bytes: &[u8]) -> String {
    const SHOWN: usize = 48;
    if bytes.len() <= SHOWN {
        escape(bytes).to_string()
    } else {
        format!("{}... ({} bytes)", escape(&bytes[..SHOWN]), bytes.len())
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Name {
    type Err = Error;
    fn from_str(s: &str) -> Result<Name> {
        Name::new(s)
    }
}

/// Shows untrusted bytes on one line: valid UTF-8 as itself, except that
/// control characters and `\` are escaped, and invalid bytes as `\xNN`.
///
/// ```
/// use piper_core::escape;
///
/// assert_eq!(escape(b"ping").to_string(), "ping");
/// assert_eq!(escape(b"a\nb\\").to_string(), "a\\nb\\\\");
/// assert_eq!(escape(b"\xff\x00").to_string(), "\\xff\\x00");
/// assert_eq!(escape("héllo".as_bytes()).to_string(), "héllo");
/// ```
pub fn escape(bytes: &[u8]) -> Escape<'_> {
    Escape(bytes)
}

/// The [`Display`](fmt::Display) form of untrusted bytes; see [`escape`].
#[derive(Debug, Clone, Copy)]
pub struct Escape<'a>(&'a [u8]);

impl fmt::Display for Escape<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The common case, a plain name, is written in one piece.
        if self.0.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'\\') {
            // Checked above: printable ASCII only.
            return f.write_str(std::str::from_utf8(self.0).map_err(|_| fmt::Error)?);
        }
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    '\t' => f.write_str("\\t")?,
                    c if c.is_ascii_control() => write!(f, "\\x{:02x}", c as u32)?,
                    c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                    c => fmt::Write::write_char(f, c)?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(bytes: &[u8]) -> &'static str {
        match Name::from_bytes(bytes) {
            Err(Error::InvalidName { rule, .. }) => rule,
            other => panic!("{bytes:?} should be invalid, got {other:?}"),
        }
    }

    #[test]
    fn valid_names_are_taken_as_they_are() {
        for name in [
            "ping",
            "pong",
            "node1000",
            "a.b_c-d",
            "...",
            ".hidden",
            "-",
            "x".repeat(100).as_str(),
        ] {
            assert_eq!(Name::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn each_rule_is_named() {
        assert_eq!(rule(b""), "a name must not be empty");
        assert_eq!(rule(b"."), "'.' and '..' are not names");
        assert_eq!(rule(b".."), "'.' and '..' are not names");
        assert_eq!(
            rule(&[b'x'; 101]),
            "a name must fit in a socket address (at most 100 bytes)"
        );
        for bad in [&b"a/b"[..], b"../x", b"a b", b"a\0b", b"\xff", "né".as_bytes(), b"a\n"] {
            assert_eq!(
                rule(bad),
                "only letters, digits, '.', '_' and '-' are allowed",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn long_garbage_is_shortened_in_errors() {
        let err = Name::from_bytes(&[b'\xff'; 5000]).unwrap_err().to_string();
        assert!(err.len() < 300, "{err}");
        assert!(err.contains("... (5000 bytes)"), "{err}");
    }

    #[test]
    fn a_name_is_its_bytes() {
        let n = Name::new("ab.c").unwrap();
        assert_eq!(n.as_bytes(), b"ab.c");
        assert_eq!(n.as_str(), "ab.c");
    }

    #[test]
    fn escape_keeps_one_line_and_is_unambiguous() {
        assert_eq!(escape(b"a\\b").to_string(), "a\\\\b");
        assert_eq!(escape(b"\\\\").to_string(), "\\\\\\\\");
        assert_eq!(escape(b"plain").to_string(), "plain");
        assert_eq!(escape(b"\r\t\x7f").to_string(), "\\r\\t\\x7f");
        assert_eq!(escape("\u{85}".as_bytes()).to_string(), "\\u{85}");
        assert_eq!(escape(b"\xc3").to_string(), "\\xc3");
    }
}
