//! The call-frame rules of one code address, read from the `.eh_frame`
//! tables (DWARF CFI) that libgcc's unwinder reads, for the heap profile's
//! fast stack walk (`os::unwind`). x86-64 only.
//!
//! libgcc finds the table entry (FDE) of an address (`_Unwind_Find_FDE`,
//! the lookup its own unwinder makes); this module runs the entry's
//! instructions up to the address and keeps what a walk needs: where the
//! caller's frame starts (the CFA: a register, `rsp` or `rbp`, plus an
//! offset), where the return address and the caller's `rbp` are saved, and
//! where the function starts. Anything else (CFA expressions, registers
//! saved in other registers, signal frames, 64-bit entry lengths) makes the
//! address [`Rule::Unsupported`], and the profile walks that stack with
//! libgcc's unwinder instead. The tables are trusted as libgcc trusts them.

use core::ffi::c_void;

/// DWARF register numbers of x86-64.
const RBP: u64 = 6;
const RSP: u64 = 7;

/// What a walk needs to step from a frame at one address to its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rule {
    /// The caller's frame: CFA = (`rbp` if `cfa_rbp`, else `rsp`) +
    /// `cfa_off`; the return address is saved at CFA + `ra_off`; the
    /// caller's `rbp` at CFA + `rbp_off` if given, else `rbp` is unchanged.
    Step {
        cfa_rbp: bool,
        cfa_off: i32,
        ra_off: i16,
        rbp_off: Option<i16>,
        func: usize,
    },
    /// The outermost frame (the return address is undefined).
    End { func: usize },
    /// No table entry covers the address (the walk ends there, as
    /// libgcc's does).
    NoEntry,
    /// A rule this module does not follow.
    Unsupported,
}

#[repr(C)]
struct DwarfEhBases {
    tbase: *mut c_void,
    dbase: *mut c_void,
    func: *mut c_void,
}

extern "C" {
    fn _Unwind_Find_FDE(pc: *mut c_void, bases: *mut DwarfEhBases) -> *const u8;
}

/// A register's rule, as far as it matters here.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reg {
    Same,
    Undefined,
    /// Saved at CFA + offset.
    At(i64),
    Other,
}

#[derive(Clone, Copy)]
struct Row {
    cfa_reg: u64,
    cfa_off: i64,
    /// The CFA is an expression.
    cfa_expr: bool,
    rbp: Reg,
    ra: Reg,
}

/// A bounded reader over table bytes.
struct Bytes {
    at: *const u8,
    end: *const u8,
}

impl Bytes {
    fn u8(&mut self) -> Option<u8> {
        if self.at >= self.end {
            return None;
        }
        // SAFETY: below `end`, inside the table entry being read.
        let b = unsafe { *self.at };
        // SAFETY: at most `end`.
        self.at = unsafe { self.at.add(1) };
        Some(b)
    }

    fn uint(&mut self, n: usize) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..n {
            v |= (self.u8()? as u64) << (8 * i);
        }
        Some(v)
    }

    fn uleb(&mut self) -> Option<u64> {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= ((b & 0x7f) as u64) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
    }

    fn sleb(&mut self) -> Option<i64> {
        let (mut v, mut shift) = (0i64, 0);
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= ((b & 0x7f) as i64) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    v |= -1i64 << shift;
                }
                return Some(v);
            }
        }
    }

    fn skip(&mut self, n: u64) -> Option<()> {
        let left = self.end as usize - self.at as usize;
        if n as usize > left {
            return None;
        }
        // SAFETY: within `end`.
        self.at = unsafe { self.at.add(n as usize) };
        Some(())
    }

    /// Skips a pointer encoded with `enc` (`DW_EH_PE_*`).
    fn skip_encoded(&mut self, enc: u8) -> Option<()> {
        match enc & 0x0f {
            0x00 | 0x04 | 0x0c => self.skip(8),
            0x01 => self.uleb().map(drop),
            0x09 => self.sleb().map(drop),
            0x02 | 0x0a => self.skip(2),
            0x03 | 0x0b => self.skip(4),
            _ => None,
        }
    }

    /// Reads an entry's length field; the entry's end. `None` for the
    /// 64-bit form or a terminator.
    fn entry(at: *const u8) -> Option<Bytes> {
        // SAFETY: `at` starts a table entry: 4 bytes of length.
        let len = unsafe { (at as *const u32).read_unaligned() };
        if len == 0 || len == u32::MAX {
            return None;
        }
        Some(Bytes {
            // SAFETY: past the length field, inside the entry.
            at: unsafe { at.add(4) },
            // SAFETY: the entry's end, as its length says.
            end: unsafe { at.add(4 + len as usize) },
        })
    }
}

/// What a CIE says of its FDEs.
struct Cie {
    code_align: u64,
    data_align: i64,
    ra_reg: u64,
    fde_enc: u8,
    has_aug_data: bool,
    insns: Bytes,
}

fn parse_cie(at: *const u8) -> Option<Cie> {
    let mut b = Bytes::entry(at)?;
    if b.uint(4)? != 0 {
        return None;
    }
    let version = b.u8()?;
    let mut aug = [0u8; 8];
    let mut n = 0;
    loop {
        let c = b.u8()?;
        if c == 0 {
            break;
        }
        if n == aug.len() {
            return None;
        }
        aug[n] = c;
        n += 1;
    }
    let aug = &aug[..n];
    if version >= 4 {
        b.skip(2)?;
    }
    let code_align = b.uleb()?;
    let data_align = b.sleb()?;
    let ra_reg = if version == 1 { b.u8()? as u64 } else { b.uleb()? };
    let mut fde_enc = 0; // absptr
    let has_aug_data = aug.first() == Some(&b'z');
    if has_aug_data {
        let len = b.uleb()?;
        let data_end = b.at as usize + len as usize;
        for &c in &aug[1..] {
            match c {
                b'R' => fde_enc = b.u8()?,
                b'L' => b.skip(1)?,
                b'P' => {
                    let enc = b.u8()?;
                    b.skip_encoded(enc)?;
                }
                // Signal frames (`S`) and anything unknown.
                _ => return None,
            }
        }
        if b.at as usize > data_end {
            return None;
        }
        b.at = data_end as *const u8;
    } else if !aug.is_empty() {
        return None;
    }
    Some(Cie {
        code_align,
        data_align,
        ra_reg,
        fde_enc,
        has_aug_data,
        insns: b,
    })
}

/// The rule in effect for the code address `pc` (`target`: rows that start
/// below it apply; a return address passes itself, with `lookup` one below
/// it, so the call's own function is found).
pub(crate) fn rule_at(lookup: usize, target: usize) -> Rule {
    let mut bases = DwarfEhBases {
        tbase: core::ptr::null_mut(),
        dbase: core::ptr::null_mut(),
        func: core::ptr::null_mut(),
    };
    // SAFETY: libgcc's lookup of the table entry covering `lookup`; it
    // fills `bases` and returns null when there is none.
    let fde = unsafe { _Unwind_Find_FDE(lookup as *mut c_void, &mut bases) };
    if fde.is_null() {
        return Rule::NoEntry;
    }
    let func = bases.func as usize;
    rule_from_fde(fde, func, target).unwrap_or(Rule::Unsupported)
}

fn rule_from_fde(fde: *const u8, func: usize, target: usize) -> Option<Rule> {
    let mut b = Bytes::entry(fde)?;
    let cie_field = b.at;
    let cie_off = b.uint(4)? as usize;
    let cie = parse_cie((cie_field as usize).checked_sub(cie_off)? as *const u8)?;
    b.skip_encoded(cie.fde_enc)?; // pc_begin (libgcc gave `func`)
    b.skip_encoded(cie.fde_enc & 0x0f)?; // pc_range
    if cie.has_aug_data {
        let n = b.uleb()?;
        b.skip(n)?;
    }
    let mut row = Row {
        cfa_reg: RSP,
        cfa_off: 0,
        cfa_expr: false,
        rbp: Reg::Same,
        ra: Reg::Same,
    };
    let mut loc = func;
    run(&cie, cie.insns_copy(), &mut row, None, &mut loc, usize::MAX)?;
    let initial = row;
    loc = func;
    run(&cie, b, &mut row, Some(&initial), &mut loc, target)?;
    if row.cfa_expr || (row.cfa_reg != RSP && row.cfa_reg != RBP) {
        return None;
    }
    let cfa_off = i32::try_from(row.cfa_off).ok()?;
    let small = |off: i64| i16::try_from(off).ok();
    match row.ra {
        Reg::Undefined => Some(Rule::End { func }),
        Reg::At(off) => Some(Rule::Step {
            cfa_rbp: row.cfa_reg == RBP,
            cfa_off,
            ra_off: small(off)?,
            rbp_off: match row.rbp {
                Reg::Same => None,
                Reg::At(o) => Some(small(o)?),
                _ => return None,
            },
            func,
        }),
        _ => None,
    }
}

impl Cie {
    fn insns_copy(&self) -> Bytes {
        Bytes {
            at: self.insns.at,
            end: self.insns.end,
        }
    }
}

/// Runs call-frame instructions from `b` on `row` while the location stays
/// below `target` (`initial`: the CIE's row, for `restore`).
fn run(cie: &Cie, mut b: Bytes, row: &mut Row, initial: Option<&Row>, loc: &mut usize, target: usize) -> Option<()> {
    let mut saved = [*row; 8];
    let mut depth = 0;
    let set = |row: &mut Row, reg: u64, rule: Reg| {
        if reg == RBP {
            row.rbp = rule;
        } else if reg == cie.ra_reg {
            row.ra = rule;
        }
    };
    let restore = |row: &mut Row, reg: u64| {
        let init = initial.copied().unwrap_or(*row);
        if reg == RBP {
            row.rbp = init.rbp;
        } else if reg == cie.ra_reg {
            row.ra = init.ra;
        }
    };
    while b.at < b.end {
        let op = b.u8()?;
        let advance = match op >> 6 {
            1 => Some((op & 0x3f) as u64),
            2 => {
                let off = b.uleb()? as i64 * cie.data_align;
                set(row, (op & 0x3f) as u64, Reg::At(off));
                None
            }
            3 => {
                restore(row, (op & 0x3f) as u64);
                None
            }
            _ => match op {
                0x00 | 0x2e => {
                    if op == 0x2e {
                        b.uleb()?;
                    }
                    None
                }
                0x02 => Some(b.uint(1)?),
                0x03 => Some(b.uint(2)?),
                0x04 => Some(b.uint(4)?),
                0x05 => {
                    let reg = b.uleb()?;
                    let off = b.uleb()? as i64 * cie.data_align;
                    set(row, reg, Reg::At(off));
                    None
                }
                0x06 => {
                    restore(row, b.uleb()?);
                    None
                }
                0x07 => {
                    set(row, b.uleb()?, Reg::Undefined);
                    None
                }
                0x08 => {
                    set(row, b.uleb()?, Reg::Same);
                    None
                }
                0x09 => {
                    let reg = b.uleb()?;
                    b.uleb()?;
                    set(row, reg, Reg::Other);
                    None
                }
                0x0a => {
                    if depth == saved.len() {
                        return None;
                    }
                    saved[depth] = *row;
                    depth += 1;
                    None
                }
                0x0b => {
                    if depth == 0 {
                        return None;
                    }
                    depth -= 1;
                    // The whole row, the CFA's rule included (as libgcc
                    // and LLVM's epilogues expect).
                    *row = saved[depth];
                    None
                }
                0x0c => {
                    row.cfa_reg = b.uleb()?;
                    row.cfa_off = b.uleb()? as i64;
                    row.cfa_expr = false;
                    None
                }
                0x0d => {
                    row.cfa_reg = b.uleb()?;
                    row.cfa_expr = false;
                    None
                }
                0x0e => {
                    row.cfa_off = b.uleb()? as i64;
                    None
                }
                0x0f => {
                    let n = b.uleb()?;
                    b.skip(n)?;
                    row.cfa_expr = true;
                    None
                }
                0x10 | 0x16 => {
                    let reg = b.uleb()?;
                    let n = b.uleb()?;
                    b.skip(n)?;
                    set(row, reg, Reg::Other);
                    None
                }
                0x11 => {
                    let reg = b.uleb()?;
                    let off = b.sleb()? * cie.data_align;
                    set(row, reg, Reg::At(off));
                    None
                }
                0x12 => {
                    row.cfa_reg = b.uleb()?;
                    row.cfa_off = b.sleb()? * cie.data_align;
                    row.cfa_expr = false;
                    None
                }
                0x13 => {
                    row.cfa_off = b.sleb()? * cie.data_align;
                    None
                }
                0x14 | 0x15 => {
                    let reg = b.uleb()?;
                    if op == 0x14 {
                        b.uleb()?;
                    } else {
                        b.sleb()?;
                    }
                    set(row, reg, Reg::Other);
                    None
                }
                0x2f => {
                    let reg = b.uleb()?;
                    let off = -(b.uleb()? as i64) * cie.data_align;
                    set(row, reg, Reg::At(off));
                    None
                }
                // DW_CFA_set_loc and anything unknown.
                _ => return None,
            },
        };
        if let Some(delta) = advance {
            *loc = loc.checked_add((delta * cie.code_align) as usize)?;
            if *loc >= target {
                return Some(());
            }
        }
    }
    Some(())
}
