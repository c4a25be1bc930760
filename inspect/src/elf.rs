//! Just enough of ELF64 (little-endian) to read one section of a file by
//! name: the section header table, its string table, and the section's
//! bytes. Used by [`crate::detect`] to read a Go binary's build info and to
//! look for a library's marks in `.rodata`, without reading the rest of a
//! possibly very large executable.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Where a section lies in its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    pub offset: u64,
    pub size: u64,
}

fn u16_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as u64)
}

fn u32_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as u64)
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads `len` bytes at `offset` (fewer at the end of the file).
fn read_at(f: &mut File, offset: u64, len: u64) -> Option<Vec<u8>> {
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut buf = Vec::new();
    f.take(len).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// The section called `name` of the ELF64 little-endian file `f`; `None`
/// for another format or when there is no such section.
pub fn find_section(f: &mut File, name: &str) -> Option<Section> {
    let header = read_at(f, 0, 64)?;
    // Magic, 64-bit class, little-endian.
    if header.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = u64_at(&header, 0x28)?;
    let shentsize = u16_at(&header, 0x3a)?;
    let shnum = u16_at(&header, 0x3c)?;
    let shstrndx = u16_at(&header, 0x3e)?;
    if shentsize < 64 || shnum == 0 || shnum > 65_280 || shstrndx >= shnum {
        return None;
    }
    let table = read_at(f, shoff, shentsize * shnum)?;
    let entry = |i: u64| -> Option<(u64, Section)> {
        let at = (i * shentsize) as usize;
        Some((
            u32_at(&table, at)?,
            Section {
                offset: u64_at(&table, at + 0x18)?,
                size: u64_at(&table, at + 0x20)?,
            },
        ))
    };
    let (_, strtab) = entry(shstrndx)?;
    let names = read_at(f, strtab.offset, strtab.size.min(1 << 20))?;
    (0..shnum).find_map(|i| {
        let (at, section) = entry(i)?;
        let rest = names.get(at as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        (&rest[..end] == name.as_bytes()).then_some(section)
    })
}

/// Up to `limit` bytes of section `name` of the ELF file at `path`.
pub fn read_section(path: &Path, name: &str, limit: u64) -> Option<Vec<u8>> {
    let mut f = File::open(path).ok()?;
    let s = find_section(&mut f, name)?;
    read_at(&mut f, s.offset, s.size.min(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_section_of_this_test_binary_and_refuses_other_files() {
        let exe = std::env::current_exe().unwrap();
        let mut f = File::open(&exe).unwrap();
        let text = find_section(&mut f, ".text").expect(".text");
        assert!(text.size > 1000);
        assert_eq!(find_section(&mut f, ".no-such-section"), None);
        let rodata = read_section(&exe, ".rodata", u64::MAX).expect(".rodata");
        assert!(!rodata.is_empty());
        // A text file is not ELF.
        let mut toml = File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
        assert_eq!(find_section(&mut toml, ".text"), None);
    }
}
