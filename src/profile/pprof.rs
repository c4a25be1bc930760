//! The heap profile in pprof's protobuf format (`profile.proto` of
//! github.com/google/pprof, uncompressed), which `go tool pprof` and the
//! services that collect pprof profiles read.
//!
//! Written by hand, field by field (no protobuf dependency, no allocation):
//! every message is small and its length is known before it is written, so
//! one pass writes each. The profile's repeated fields may come in any
//! order on the wire, and do here:
//!
//! * the string table's fixed entries, and the sample and period types
//!   (`inuse_objects`/`count`, `inuse_space`/`bytes`; `space`/`bytes`
//!   every `interval` bytes);
//! * one mapping per executable file mapping of `/proc/self/maps`, each
//!   followed by its file name in the string table;
//! * one location per frame of each line of the profile (a line: one call
//!   stack and object size, as in the text format), at the return address
//!   minus one (inside the call, so a symbolizer names the call's line),
//!   with the mapping that holds it;
//! * one sample per line, its values already divided by the probability
//!   that an object of its size was sampled (protobuf profiles carry
//!   estimates, not raw samples).

use super::out::Out;
use super::table::Record;
use core::ffi::CStr;

/// Executable mappings kept (a program with more: the rest's frames have
/// no mapping, and stay unsymbolized). Their ranges live on the stack of
/// the thread that writes (4 KiB), which may be any thread that samples.
const MAX_MAPS: usize = 256;

// String table indices of the fixed strings.
const S_INUSE_OBJECTS: u64 = 1;
const S_COUNT: u64 = 2;
const S_INUSE_SPACE: u64 = 3;
const S_BYTES: u64 = 4;
const S_SPACE: u64 = 5;
const FIXED_STRINGS: [&[u8]; 6] = [b"", b"inuse_objects", b"count", b"inuse_space", b"bytes", b"space"];

// Field numbers of `Profile`.
const P_SAMPLE_TYPE: u32 = 1;
const P_SAMPLE: u32 = 2;
const P_MAPPING: u32 = 3;
const P_LOCATION: u32 = 4;
const P_STRING_TABLE: u32 = 6;
const P_PERIOD_TYPE: u32 = 11;
const P_PERIOD: u32 = 12;

const VARINT: u32 = 0;
const LEN: u32 = 2;

/// Bytes of `v` as a varint.
fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Bytes of a varint field (key and value).
fn field_len(field: u32, v: u64) -> usize {
    varint_len(u64::from(field << 3)) + varint_len(v)
}

/// Bytes of a length-delimited field whose payload is `len` bytes.
fn nested_len(field: u32, len: usize) -> usize {
    varint_len(u64::from(field << 3 | LEN)) + varint_len(len as u64) + len
}

impl Out {
    fn varint(&mut self, mut v: u64) {
        let mut b = [0u8; 10];
        let mut n = 0;
        while v >= 0x80 {
            b[n] = v as u8 | 0x80;
            v >>= 7;
            n += 1;
        }
        b[n] = v as u8;
        self.text(&b[..=n]);
    }

    fn key(&mut self, field: u32, wire: u32) {
        self.varint(u64::from(field << 3 | wire));
    }

    fn field(&mut self, field: u32, v: u64) {
        self.key(field, VARINT);
        self.varint(v);
    }

    /// The key and length of a length-delimited field; its payload follows.
    fn open(&mut self, field: u32, len: usize) {
        self.key(field, LEN);
        self.varint(len as u64);
    }

    fn string(&mut self, s: &[u8]) {
        self.open(P_STRING_TABLE, s.len());
        self.text(s);
    }

    /// A `ValueType` field: type and unit as string indices.
    fn value_type(&mut self, field: u32, ty: u64, unit: u64) {
        self.open(field, field_len(1, ty) + field_len(2, unit));
        self.field(1, ty);
        self.field(2, unit);
    }
}

/// One executable mapping: `[start, end)` at `offset` in its file.
#[derive(Clone, Copy)]
struct Map {
    start: usize,
    end: usize,
    offset: usize,
}

/// Parses a line of `/proc/self/maps`: the range, the offset and the path
/// of an executable file mapping, else `None`.
fn parse_map(line: &[u8]) -> Option<(Map, &[u8])> {
    let mut fields = line.split(|&c| c == b' ').filter(|f| !f.is_empty());
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = hex(fields.next()?)?;
    let _dev = fields.next()?;
    let _inode = fields.next()?;
    let path_at = fields.next()?.as_ptr() as usize - line.as_ptr() as usize;
    let path = &line[path_at..];
    if perms.get(2) != Some(&b'x') || path.first() != Some(&b'/') {
        return None;
    }
    let dash = range.iter().position(|&c| c == b'-')?;
    let map = Map {
        start: hex(&range[..dash])?,
        end: hex(&range[dash + 1..])?,
        offset,
    };
    Some((map, path))
}

fn hex(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    s.iter().try_fold(0usize, |v, &c| {
        let d = (c as char).to_digit(16)?;
        Some(v << 4 | d as usize)
    })
}

/// The 1-based id of the mapping (of `ranges`, `[start, end)`) holding
/// `addr`, or 0.
fn mapping_of(ranges: &[(usize, usize)], addr: usize) -> u64 {
    ranges
        .iter()
        .position(|&(start, end)| (start..end).contains(&addr))
        .map_or(0, |i| i as u64 + 1)
}

/// One line of the profile: `records[i..j]` share a stack and a size.
struct Line<'a> {
    stack: &'a [usize],
    objects: u64,
    bytes: u64,
}

/// The lines of `records` (sorted by stack, then size), each estimated:
/// `n` samples of `size` bytes stand for `n * weight(size)` objects.
fn lines(records: &[Record], interval: usize) -> impl Iterator<Item = Line<'_>> {
    let mut i = 0;
    core::iter::from_fn(move || {
        if i == records.len() {
            return None;
        }
        let r = &records[i];
        let mut j = i + 1;
        while j < records.len() && r.same_line(&records[j]) {
            j += 1;
        }
        let w = (j - i) as f64 * super::weight(r.size, interval);
        i = j;
        Some(Line {
            stack: &r.stack[..r.depth],
            objects: w.round() as u64,
            bytes: (w * r.size as f64).round() as u64,
        })
    })
}

/// Writes the profile of `records` (sorted by stack, then size) to `out`.
pub(super) fn write(out: &mut Out, records: &[Record], interval: usize) {
    for s in FIXED_STRINGS {
        out.string(s);
    }
    out.value_type(P_SAMPLE_TYPE, S_INUSE_OBJECTS, S_COUNT);
    out.value_type(P_SAMPLE_TYPE, S_INUSE_SPACE, S_BYTES);
    out.value_type(P_PERIOD_TYPE, S_SPACE, S_BYTES);
    out.field(P_PERIOD, interval as u64);

    let mut ranges = [(0usize, 0usize); MAX_MAPS];
    let mut n_maps = 0;
    let mut next_string = FIXED_STRINGS.len() as u64;
    crate::os::linux::for_each_line(c"/proc/self/maps", &mut |line| {
        let Some((m, path)) = parse_map(line) else {
            return true;
        };
        if n_maps == MAX_MAPS {
            return false;
        }
        ranges[n_maps] = (m.start, m.end);
        n_maps += 1;
        let (id, file) = (n_maps as u64, next_string);
        next_string += 1;
        out.open(
            P_MAPPING,
            field_len(1, id)
                + field_len(2, m.start as u64)
                + field_len(3, m.end as u64)
                + field_len(4, m.offset as u64)
                + field_len(5, file),
        );
        out.field(1, id);
        out.field(2, m.start as u64);
        out.field(3, m.end as u64);
        out.field(4, m.offset as u64);
        out.field(5, file);
        out.string(path);
        true
    });
    let ranges = &ranges[..n_maps];

    // Locations: ids 1, 2, ... in the order of the lines' frames.
    let mut id = 0u64;
    for line in lines(records, interval) {
        for &pc in line.stack {
            id += 1;
            let addr = pc.wrapping_sub(1) as u64;
            let mapping = mapping_of(ranges, pc.wrapping_sub(1));
            let len = field_len(1, id)
                + if mapping != 0 { field_len(2, mapping) } else { 0 }
                + field_len(3, addr);
            out.open(P_LOCATION, len);
            out.field(1, id);
            if mapping != 0 {
                out.field(2, mapping);
            }
            out.field(3, addr);
        }
    }

    // Samples, with the same ids.
    let mut id = 0u64;
    for line in lines(records, interval) {
        let first = id + 1;
        let ids_len: usize = (first..first + line.stack.len() as u64).map(varint_len).sum();
        let values_len = varint_len(line.objects) + varint_len(line.bytes);
        out.open(P_SAMPLE, nested_len(1, ids_len) + nested_len(2, values_len));
        out.open(1, ids_len);
        for _ in line.stack {
            id += 1;
            out.varint(id);
        }
        out.open(2, values_len);
        out.varint(line.objects);
        out.varint(line.bytes);
    }
}

/// Whether a profile written to `path` should be protobuf: its name ends
/// in `.pb` or `.pb.` and a number (one written on a signal).
pub(crate) fn wants_proto(path: &CStr) -> bool {
    let p = path.to_bytes();
    let base = match p.iter().rposition(|&c| c == b'.') {
        Some(dot) if dot + 1 < p.len() && p[dot + 1..].iter().all(u8::is_ascii_digit) => &p[..dot],
        _ => p,
    };
    base.ends_with(b".pb")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_lengths_agree() {
        // A varint holds 7 bits per byte.
        for (v, bytes) in [(0u64, 1), (1, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3)] {
            assert_eq!(varint_len(v), bytes, "{v}");
        }
        assert_eq!(varint_len(u64::from(u32::MAX)), 5);
        assert_eq!(varint_len(u64::MAX), 10);
        assert_eq!(varint_len(300), 2);
        assert_eq!(field_len(1, 300), 3);
        assert_eq!(nested_len(2, 200), 1 + 2 + 200);
    }

    #[test]
    fn maps_lines_parse_to_executable_file_mappings() {
        let line = b"55771a3e5000-55771a46d000 r-xp 0003e000 fe:00 10010648                   /tmp/a b";
        let (m, path) = parse_map(line).unwrap();
        assert_eq!((m.start, m.end, m.offset), (0x55771a3e5000, 0x55771a46d000, 0x3e000));
        assert_eq!(path, b"/tmp/a b");
        assert!(parse_map(b"55771a3a6000-55771a3e5000 r--p 00000000 fe:00 10010648 /tmp/a").is_none());
        assert!(parse_map(b"7ffd1000-7ffd3000 r-xp 00000000 00:00 0 [vdso]").is_none());
        assert!(parse_map(b"7ffd1000-7ffd3000 rw-p 00000000 00:00 0").is_none());
        let ranges = [(0x1000, 0x2000), (m.start, m.end)];
        assert_eq!(mapping_of(&ranges, 0x55771a3e5000), 2);
        assert_eq!(mapping_of(&ranges, 0x1fff), 1);
        assert_eq!(mapping_of(&ranges, 0x55771a46d000), 0);
    }

    #[test]
    fn protobuf_is_chosen_by_the_file_name() {
        assert!(wants_proto(c"/tmp/heap.pb"));
        assert!(wants_proto(c"/tmp/heap.pb.12"));
        assert!(!wants_proto(c"/tmp/heap.prof"));
        assert!(!wants_proto(c"/tmp/heap.prof.3"));
        assert!(!wants_proto(c"/tmp/heap.pbx"));
    }
}
