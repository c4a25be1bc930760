//! A buffered writer over a stack buffer, for the heap profile's files
//! (`format`, `pprof`): no allocation, and the first error sticks.

use crate::os::linux::WriteFile;

/// Why a profile was not written.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Error {
    /// Profiling never started: nothing to write.
    NotStarted,
    /// Another thread is writing a profile.
    Busy,
    /// The file system's `errno`.
    Os(i32),
}

/// A buffered writer over a stack buffer; the first error sticks.
pub(crate) struct Out {
    file: WriteFile,
    buf: [u8; 8192],
    len: usize,
    error: Option<i32>,
}

impl Out {
    pub(super) fn new(file: WriteFile) -> Self {
        Out {
            file,
            buf: [0; 8192],
            len: 0,
            error: None,
        }
    }

    pub(super) fn flush(&mut self) {
        if self.error.is_none() {
            if let Err(e) = self.file.write_all(&self.buf[..self.len]) {
                self.error = Some(e);
            }
        }
        self.len = 0;
    }

    pub(super) fn text(&mut self, s: &[u8]) {
        for chunk in s.chunks(self.buf.len()) {
            if self.len + chunk.len() > self.buf.len() {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
    }

    pub(super) fn dec(&mut self, v: usize) {
        let mut digits = [0u8; 20];
        let n = crate::config::write_decimal(&mut digits, v);
        self.text(&digits[..n]);
    }

    pub(super) fn hex(&mut self, mut v: usize) {
        let mut digits = [0u8; 16];
        let mut n = 0;
        loop {
            digits[15 - n] = b"0123456789abcdef"[v & 15];
            n += 1;
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        self.text(&digits[16 - n..]);
    }

    /// `<n>: <bytes> [<n>: <bytes>]`.
    pub(super) fn pair(&mut self, n: usize, bytes: usize) {
        for k in 0..2 {
            self.text(if k == 0 { b"" } else { b" [" });
            self.dec(n);
            self.text(b": ");
            self.dec(bytes);
        }
        self.text(b"]");
    }

    pub(super) fn finish(mut self) -> Result<WriteFile, Error> {
        self.flush();
        match self.error {
            Some(e) => Err(Error::Os(e)),
            None => Ok(self.file),
        }
    }
}
