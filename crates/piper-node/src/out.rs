//! Where message lines go: stdout, written in whole lines.
//!
//! Under `piper-launch`, many nodes may share one stdout (a pipe or a file).
//! Each write here carries only whole lines, and at most `PIPE_BUF` bytes,
//! which the kernel writes into a pipe in one piece, so no two nodes' lines
//! ever interleave mid-line (a regular file serialises writes anyway). The
//! buffer is large, so a busy node still makes one write per hundred lines.

use std::io::{self, Write};

/// What the kernel writes into a pipe atomically (`PIPE_BUF`).
const PIPE_BUF: usize = 4096;

/// A buffered writer that only ever writes whole lines, in pieces of at
/// most [`PIPE_BUF`] bytes (a single longer line goes out alone).
pub struct WholeLines<W: Write> {
    inner: W,
    buf: Vec<u8>,
    capacity: usize,
    /// The end of the last whole line in `buf` (0: none), kept as bytes
    /// come in, so that no write scans what an earlier one already did: a
    /// line of any length costs time linear in its length.
    whole: usize,
}

impl<W: Write> WholeLines<W> {
    /// Buffers up to `capacity` bytes before writing.
    pub fn new(inner: W, capacity: usize) -> WholeLines<W> {
        WholeLines {
            inner,
            buf: Vec::with_capacity(capacity),
            capacity,
            whole: 0,
        }
    }

    /// Writes out every complete line in the buffer. Each byte is looked
    /// at a bounded number of times: at most twice within a `PIPE_BUF`
    /// window, and once more for a line longer than that.
    fn write_lines(&mut self) -> io::Result<()> {
        let mut start = 0;
        while start < self.whole {
            let rest = &self.buf[start..self.whole];
            // The longest run of whole lines that fits in PIPE_BUF, or one
            // line alone if it is longer than that.
            let window = &rest[..rest.len().min(PIPE_BUF)];
            let end = match window.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |i| i + 1),
            };
            if let Err(e) = self.inner.write_all(&rest[..end]) {
                self.consume(start);
                return Err(e);
            }
            start += end;
        }
        self.consume(start);
        Ok(())
    }

    /// Forgets the first `n` bytes of the buffer (written).
    fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
        self.whole -= n;
    }
}

impl<W: Write> Write for WholeLines<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.capacity {
            self.write_lines()?;
        }
        if let Some(i) = data.iter().rposition(|&b| b == b'\n') {
            self.whole = self.buf.len() + i + 1;
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    /// Writes the complete lines; a partial last line waits for its end
    /// (the node only ever writes whole lines, so at a flush there is none).
    fn flush(&mut self) -> io::Result<()> {
        self.write_lines()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for WholeLines<W> {
    fn drop(&mut self) {
        if self.write_lines().is_err() {
            return;
        }
        if !self.buf.is_empty() {
            let _ = self.inner.write_all(&self.buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each write separately.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for &mut Writes {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.push(data.to_vec());
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_write_is_whole_lines_of_at_most_pipe_buf() {
        let mut writes = Writes::default();
        {
            let mut out = WholeLines::new(&mut writes, 64 * 1024);
            for i in 0..5000 {
                writeln!(out, "node{i} received: 'node{}'", i + 1).unwrap();
            }
            out.flush().unwrap();
        }
        let all: Vec<u8> = writes.0.concat();
        assert_eq!(all.iter().filter(|&&b| b == b'\n').count(), 5000);
        for w in &writes.0 {
            assert!(w.len() <= PIPE_BUF, "a write of {}", w.len());
            assert_eq!(w.last(), Some(&b'\n'));
        }
    }

    #[test]
    fn a_line_longer_than_pipe_buf_goes_out_alone_and_whole() {
        let mut writes = Writes::default();
        {
            let mut out = WholeLines::new(&mut writes, 64 * 1024);
            writeln!(out, "short").unwrap();
            writeln!(out, "{}", "x".repeat(10_000)).unwrap();
            writeln!(out, "after").unwrap();
            out.flush().unwrap();
        }
        let lens: Vec<usize> = writes.0.iter().map(Vec::len).collect();
        assert_eq!(lens, [6, 10_001, 6]);
    }
}

#[cfg(test)]
mod cost {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// Counts the bytes written and the writes, and keeps nothing.
    #[derive(Clone, Default)]
    struct Sink(Rc<Cell<(usize, usize)>>);

    impl Write for Sink {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            let (bytes, writes) = self.0.get();
            self.0.set((bytes + data.len(), writes + 1));
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A line longer than the buffer, written four bytes at a time, as
    /// `escape` writes `\xff`: it goes out whole, in one write, once its
    /// newline comes. (That its cost is linear, the node's CPU time for the
    /// largest datagram shows: tests/node.rs.)
    #[test]
    fn a_line_longer_than_the_buffer_written_in_pieces_goes_out_in_one_write() {
        let sink = Sink::default();
        let mut out = WholeLines::new(sink.clone(), 1024);
        for _ in 0..20_000 {
            out.write_all(b"\\xff").unwrap();
        }
        assert_eq!(sink.0.get(), (0, 0), "no newline yet");
        out.write_all(b"'\nnext").unwrap();
        out.flush().unwrap();
        assert_eq!(sink.0.get(), (80_002, 1));
        drop(out);
        assert_eq!(sink.0.get(), (80_006, 2), "the unfinished rest at the drop");
    }
}

#[cfg(test)]
mod buffering {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Records each write it is given.
    #[derive(Clone, Default)]
    struct Writes(Rc<RefCell<Vec<Vec<u8>>>>);

    impl Write for Writes {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.borrow_mut().push(data.to_vec());
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Writes {
        fn taken(&self) -> Vec<String> {
            let writes = std::mem::take(&mut *self.0.borrow_mut());
            writes.into_iter().map(|w| String::from_utf8(w).unwrap()).collect()
        }
    }

    #[test]
    fn lines_wait_until_the_buffer_would_overflow_then_go_in_one_write() {
        let writes = Writes::default();
        let mut out = WholeLines::new(writes.clone(), 20);
        out.write_all(b"aaa\naaa\naaa\n").unwrap();
        out.write_all(b"ccccccc\n").unwrap(); // exactly 20: still buffered
        assert_eq!(writes.taken(), Vec::<String>::new());
        out.write_all(b"d\n").unwrap(); // 22: the 20 go first, in one write
        assert_eq!(writes.taken(), ["aaa\naaa\naaa\nccccccc\n"]);
        out.flush().unwrap();
        assert_eq!(writes.taken(), ["d\n"]);
    }

    #[test]
    fn writes_carry_at_most_pipe_buf_of_whole_lines_and_a_long_line_alone() {
        let writes = Writes::default();
        let mut out = WholeLines::new(writes.clone(), 1 << 16);
        let line = format!("{}\n", "x".repeat(99));
        for _ in 0..50 {
            out.write_all(line.as_bytes()).unwrap();
        }
        out.flush().unwrap();
        let sizes: Vec<usize> = writes.taken().iter().map(String::len).collect();
        assert_eq!(sizes, [4000, 1000], "40 whole lines fit in 4096 bytes");
        let long = format!("{}\n", "y".repeat(5000));
        out.write_all(long.as_bytes()).unwrap();
        out.write_all(b"z\n").unwrap();
        out.flush().unwrap();
        assert_eq!(writes.taken(), [long, "z\n".to_string()]);
    }

    #[test]
    fn dropping_writes_what_is_left_even_an_unfinished_line() {
        let writes = Writes::default();
        let mut out = WholeLines::new(writes.clone(), 1024);
        out.write_all(b"a\nb").unwrap();
        out.flush().unwrap();
        assert_eq!(writes.taken(), ["a\n"], "a flush keeps an unfinished line");
        drop(out);
        assert_eq!(writes.taken(), ["b"]);
    }
}
