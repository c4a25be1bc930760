//! The heap profile as text, in the format gperftools' heap profiler and
//! TCMalloc write and `google-pprof` (and `jeprof`, and Go's `pprof`)
//! read:
//!
//! ```text
//! heap profile: <objects>: <bytes> [<objects>: <bytes>] @ heap_v2/<interval>
//! <objects>: <bytes> [<objects>: <bytes>] @ 0x<pc> 0x<pc> ...
//! ...
//!
//! MAPPED_LIBRARIES:
//! <the contents of /proc/self/maps>
//! ```
//!
//! One line per call stack and object size: the counts are the samples
//! themselves, and `heap_v2/<interval>` tells the reader to divide each
//! line by the probability that an object of its mean size was sampled
//! (`1 - exp(-size / interval)`). Lines group by size as well as stack so
//! that the division is exact for each. The bracketed pair (objects and
//! bytes allocated since the start) repeats the live pair: only live
//! samples are kept. The mappings let the reader find each address's
//! binary and symbol, position-independent executables included.
//!
//! Written without allocating, through a stack buffer, so it can run at
//! exit.

use super::table::{self, Record};
use crate::os::linux::WriteFile;
use core::ffi::CStr;
use core::sync::atomic::{AtomicBool, Ordering};

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

/// Held while a profile is written (the snapshot's scratch area is shared).
static WRITING: AtomicBool = AtomicBool::new(false);

/// Writes the live samples to `path`.
pub(crate) fn write_profile(path: &CStr) -> Result<(), Error> {
    if WRITING.swap(true, Ordering::Acquire) {
        return Err(Error::Busy);
    }
    let result = write_locked(path);
    WRITING.store(false, Ordering::Release);
    result
}

fn write_locked(path: &CStr) -> Result<(), Error> {
    let interval = super::interval();
    let written = table::with_snapshot(|records| -> Result<(), Error> {
        records.sort_unstable_by(|a, b| {
            a.stack[..a.depth]
                .cmp(&b.stack[..b.depth])
                .then(a.size.cmp(&b.size))
        });
        let f = WriteFile::create(path).map_err(Error::Os)?;
        let mut out = Out::new(f);
        let total_bytes: usize = records.iter().map(|r| r.size).sum();
        out.text(b"heap profile: ");
        out.pair(records.len(), total_bytes);
        out.text(b" @ heap_v2/");
        out.dec(interval);
        out.text(b"\n");
        let mut i = 0;
        while i < records.len() {
            let mut j = i + 1;
            while j < records.len() && same_line(&records[i], &records[j]) {
                j += 1;
            }
            let r = &records[i];
            let n = j - i;
            out.pair(n, n * r.size);
            out.text(b" @");
            for &pc in &r.stack[..r.depth] {
                out.text(b" 0x");
                out.hex(pc);
            }
            out.text(b"\n");
            i = j;
        }
        out.text(b"\nMAPPED_LIBRARIES:\n");
        let mut f = out.finish()?;
        f.copy_from(c"/proc/self/maps").map_err(Error::Os)
    });
    written.unwrap_or(Err(Error::NotStarted))
}

fn same_line(a: &Record, b: &Record) -> bool {
    a.size == b.size && a.stack[..a.depth] == b.stack[..b.depth]
}

/// A buffered writer over a stack buffer; the first error sticks.
struct Out {
    file: WriteFile,
    buf: [u8; 8192],
    len: usize,
    error: Option<i32>,
}

impl Out {
    fn new(file: WriteFile) -> Self {
        Out {
            file,
            buf: [0; 8192],
            len: 0,
            error: None,
        }
    }

    fn flush(&mut self) {
        if self.error.is_none() {
            if let Err(e) = self.file.write_all(&self.buf[..self.len]) {
                self.error = Some(e);
            }
        }
        self.len = 0;
    }

    fn text(&mut self, s: &[u8]) {
        for chunk in s.chunks(self.buf.len()) {
            if self.len + chunk.len() > self.buf.len() {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
    }

    fn dec(&mut self, v: usize) {
        let mut digits = [0u8; 20];
        let n = crate::config::write_decimal(&mut digits, v);
        self.text(&digits[..n]);
    }

    fn hex(&mut self, mut v: usize) {
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
    fn pair(&mut self, n: usize, bytes: usize) {
        for k in 0..2 {
            self.text(if k == 0 { b"" } else { b" [" });
            self.dec(n);
            self.text(b": ");
            self.dec(bytes);
        }
        self.text(b"]");
    }

    fn finish(mut self) -> Result<WriteFile, Error> {
        self.flush();
        match self.error {
            Some(e) => Err(Error::Os(e)),
            None => Ok(self.file),
        }
    }
}
