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
//! Written without allocating, through a stack buffer (`out`), so it can
//! run at exit. Also where a profile's file is written in either format
//! (this one, or pprof's protobuf: `pprof`).

use super::out::Out;
use super::table;
use crate::os::linux::WriteFile;
use core::ffi::CStr;
use core::sync::atomic::{AtomicBool, Ordering};

pub(crate) use super::out::Error;

/// Held while a profile is written (the snapshot's scratch area is shared).
static WRITING: AtomicBool = AtomicBool::new(false);

/// How a profile is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// This module's text format.
    Text,
    /// pprof's protobuf format (`pprof`).
    Proto,
}

/// Writes the live samples to `path`.
pub(crate) fn write_profile(path: &CStr, format: Format) -> Result<(), Error> {
    if WRITING.swap(true, Ordering::Acquire) {
        return Err(Error::Busy);
    }
    let result = write_locked(path, format);
    WRITING.store(false, Ordering::Release);
    result
}

fn write_locked(path: &CStr, format: Format) -> Result<(), Error> {
    let interval = super::interval();
    let written = table::with_snapshot(|records| -> Result<(), Error> {
        records.sort_unstable_by(|a, b| {
            a.stack[..a.depth]
                .cmp(&b.stack[..b.depth])
                .then(a.size.cmp(&b.size))
        });
        let f = WriteFile::create(path).map_err(Error::Os)?;
        let mut out = Out::new(f);
        if format == Format::Proto {
            super::pprof::write(&mut out, records, interval);
            return out.finish().map(drop);
        }
        let total_bytes: usize = records.iter().map(|r| r.size).sum();
        out.text(b"heap profile: ");
        out.pair(records.len(), total_bytes);
        out.text(b" @ heap_v2/");
        out.dec(interval);
        out.text(b"\n");
        let mut i = 0;
        while i < records.len() {
            let mut j = i + 1;
            while j < records.len() && records[i].same_line(&records[j]) {
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

