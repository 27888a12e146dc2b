//! Just enough JSON for piper's machine-readable output: objects of
//! numbers, strings and nulls, one per line, written by hand (the escaping
//! below is the whole of RFC 8259's string grammar) so that the tools need
//! no serialisation crate.
//!
//! Names are restricted to `[A-Za-z0-9._-]`, but paths are not: a path is
//! given as `"path"`, exact when it is UTF-8 and with each invalid byte
//! replaced by U+FFFD otherwise, in which case `"path_bytes"` gives its
//! bytes exactly.

use std::fmt::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A JSON object under construction: `Object::new().str("a", "b").num("n", 1).finish()`.
#[derive(Debug)]
pub struct Object {
    text: String,
}

impl Object {
    /// An empty object.
    pub fn new() -> Object {
        Object {
            text: String::from("{"),
        }
    }

    fn key(&mut self, key: &str) -> &mut String {
        if self.text.len() > 1 {
            self.text.push(',');
        }
        push_string(&mut self.text, key);
        self.text.push(':');
        &mut self.text
    }

    /// A string member.
    pub fn str(mut self, key: &str, value: &str) -> Object {
        push_string(self.key(key), value);
        self
    }

    /// A whole-number member.
    pub fn num(mut self, key: &str, value: impl Into<i128>) -> Object {
        let _ = write!(self.key(key), "{}", value.into());
        self
    }

    /// A number member with a fraction (seconds, rates); finite, or null.
    pub fn float(mut self, key: &str, value: f64) -> Object {
        let text = self.key(key);
        if value.is_finite() {
            let _ = write!(text, "{value:.6}");
        } else {
            text.push_str("null");
        }
        self
    }

    /// A number member, or null when absent.
    pub fn opt_num(self, key: &str, value: Option<impl Into<i128>>) -> Object {
        match value {
            Some(v) => self.num(key, v),
            None => self.null(key),
        }
    }

    /// A string member, or null when absent.
    pub fn opt_str(self, key: &str, value: Option<&str>) -> Object {
        match value {
            Some(v) => self.str(key, v),
            None => self.null(key),
        }
    }

    /// A null member.
    pub fn null(mut self, key: &str) -> Object {
        self.key(key).push_str("null");
        self
    }

    /// A path member (see the module's doc for non-UTF-8 paths).
    pub fn path(self, key: &str, path: &Path) -> Object {
        let bytes = path.as_os_str().as_bytes();
        match std::str::from_utf8(bytes) {
            Ok(text) => self.str(key, text),
            Err(_) => {
                let lossy = String::from_utf8_lossy(bytes).into_owned();
                let mut array = String::from("[");
                for (i, b) in bytes.iter().enumerate() {
                    let _ = write!(array, "{}{b}", if i > 0 { "," } else { "" });
                }
                array.push(']');
                self.str(key, &lossy).raw(&format!("{key}_bytes"), &array)
            }
        }
    }

    /// A member whose value is already JSON (an array of objects, say).
    pub fn raw(mut self, key: &str, json: &str) -> Object {
        self.key(key).push_str(json);
        self
    }

    /// The object's text.
    pub fn finish(mut self) -> String {
        self.text.push('}');
        self.text
    }
}

/// An empty object, as [`Object::new`]: `{}` once finished.
impl Default for Object {
    fn default() -> Object {
        Object::new()
    }
}

/// Appends `value` as a JSON string: quotes, backslashes and control
/// characters escaped; everything else as it is (JSON text is UTF-8).
fn push_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_object_is_an_empty_one() {
        assert_eq!(Object::default().finish(), "{}");
        assert_eq!(Object::default().num("n", 1).finish(), r#"{"n":1}"#);
    }

    #[test]
    fn strings_escape_what_json_requires() {
        let obj = Object::new().str("k", "a\"b\\c\nd\u{1}é").finish();
        assert_eq!(obj, r#"{"k":"a\"b\\c\nd\u0001é"}"#);
    }

    #[test]
    fn control_characters_end_below_space() {
        let obj = Object::new().str("k", "\u{1f} ~\u{7f}").finish();
        assert_eq!(obj, r#"{"k":"\u001f ~\u007f"}"#);
    }

    #[test]
    fn absent_strings_and_numbers_are_null() {
        let obj = Object::new()
            .opt_str("a", Some("x"))
            .opt_str("b", None)
            .opt_num("c", Some(7))
            .opt_num("d", None::<i64>)
            .finish();
        assert_eq!(obj, r#"{"a":"x","b":null,"c":7,"d":null}"#);
    }

    #[test]
    fn members_are_separated_and_typed() {
        let obj = Object::new()
            .str("name", "pong")
            .num("n", 3u64)
            .opt_num("pid", None::<i32>)
            .float("rate", 2.5)
            .float("bad", f64::NAN)
            .finish();
        assert_eq!(obj, r#"{"name":"pong","n":3,"pid":null,"rate":2.500000,"bad":null}"#);
    }

    #[test]
    fn non_utf8_paths_keep_their_bytes() {
        let path = Path::new(std::ffi::OsStr::from_bytes(b"/a\xffb"));
        let obj = Object::new().path("path", path).finish();
        assert_eq!(obj, "{\"path\":\"/a\u{fffd}b\",\"path_bytes\":[47,97,255,98]}");
        let plain = Object::new().path("path", Path::new("/a\"b")).finish();
        assert_eq!(plain, r#"{"path":"/a\"b"}"#);
    }
}
