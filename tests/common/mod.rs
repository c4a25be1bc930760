//! Cookie-checked blocks for the integration tests: a block of `size` bytes
//! whose every byte is a function of its id and offset, so a block handed
//! out twice, overwritten or released under its owner shows up as broken.

/// The byte at offset `i` of block `id`.
pub fn cookie(id: u64, i: usize) -> u8 {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (i % 57)) as u8
}

/// A new block `id` of `size` bytes, filled with its cookies.
pub fn make(id: u64, size: usize) -> (u64, Vec<u8>) {
    (id, (0..size).map(|i| cookie(id, i)).collect())
}

/// Whether every byte of the block is still its cookie.
pub fn intact((id, v): &(u64, Vec<u8>)) -> bool {
    v.iter().enumerate().all(|(i, &b)| b == cookie(*id, i))
}
