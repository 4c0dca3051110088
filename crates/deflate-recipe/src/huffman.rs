//! Canonical Huffman codes (RFC 1951 3.2.2): validation, decoding tables and
//! encoder codes, plus the fixed length/distance code tables.

/// Order in which code-length-code lengths are transmitted.
pub const CL_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// Base match length for length codes 257..=285.
pub const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
/// Extra bits for length codes 257..=285.
pub const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// Base distance for distance codes 0..=29.
pub const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
/// Extra bits for distance codes 0..=29.
pub const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// Length code index (0..=28, i.e. symbol - 257) for a regular length 3..=258.
#[inline]
pub fn len_code(len: u16) -> usize {
    LEN_CODE_TABLE[(len - 3) as usize] as usize
}

/// Distance code (0..=29) for a distance 1..=32768, without branches
/// (token loops call it for every match, and matches and literals
/// alternate unpredictably): of `d`, the distance less one, two codes per
/// power of two, the top bit position and the bit below it; `d` < 4
/// comes out as itself. A distance of 0 (a literal's) gives 29, unused.
#[inline]
pub fn dist_code(dist: u16) -> usize {
    let d = (dist as u32).wrapping_sub(1) & 0x7fff;
    let hb = 31 - (d | 1).leading_zeros();
    (2 * hb + ((d >> hb.saturating_sub(1)) & 1)) as usize
}

/// Literal/length symbol for a match's raw length (3..=258, or 259 for
/// the irregular 258 written as 284); lengths below 3 give 286, no
/// symbol (such tokens have no code and are refused when written).
pub static MATCH_SYMBOL: [u16; 260] = {
    let mut t = [286u16; 260];
    let mut len = 3;
    while len < 259 {
        t[len] = 257 + LEN_CODE_TABLE[len - 3] as u16;
        len += 1;
    }
    t[259] = 284;
    t
};

static LEN_CODE_TABLE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut code = 0;
    while code < 28 {
        let base = LEN_BASE[code] as usize - 3;
        let n = 1usize << LEN_EXTRA[code];
        let mut i = 0;
        while i < n {
            if base + i < 256 {
                t[base + i] = code as u8;
            }
            i += 1;
        }
        code += 1;
    }
    t[255] = 28;
    t
};

/// Lengths of the fixed literal/length code.
pub fn fixed_lit_lengths() -> [u8; 288] {
    let mut l = [0u8; 288];
    for (i, v) in l.iter_mut().enumerate() {
        *v = match i {
            0..=143 => 8,
            144..=255 => 9,
            256..=279 => 7,
            _ => 8,
        };
    }
    l
}

/// Lengths of the fixed distance code.
pub fn fixed_dist_lengths() -> [u8; 30] {
    [5u8; 30]
}

/// Why a set of code lengths is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeProblem {
    /// More codes than the bit lengths allow.
    OverSubscribed,
    /// Codes left unused (only allowed for a single one-bit code).
    Incomplete,
}

/// Check lengths the way zlib's inflate does: over-subscribed sets are
/// invalid; incomplete sets are valid only when `allow_single` and the set is
/// a single one-bit code (or empty), which RFC 1951 allows and Go writes.
pub fn check_lengths(lens: &[u8], allow_single: bool) -> Result<(), CodeProblem> {
    let mut count = [0u32; 16];
    for &l in lens {
        count[l as usize] += 1;
    }
    count[0] = 0;
    let mut left: i64 = 1;
    let mut max = 0;
    for (len, &c) in count.iter().enumerate().skip(1) {
        left <<= 1;
        left -= c as i64;
        if left < 0 {
            return Err(CodeProblem::OverSubscribed);
        }
        if c > 0 {
            max = len;
        }
    }
    if left > 0 && max != 0 && !(allow_single && max == 1) {
        return Err(CodeProblem::Incomplete);
    }
    if max == 0 && !allow_single {
        return Err(CodeProblem::Incomplete);
    }
    Ok(())
}

/// Reverse the low `n` bits of `v`.
#[inline]
pub fn reverse(v: u32, n: u32) -> u32 {
    v.reverse_bits() >> (32 - n)
}

/// Canonical codes (already bit-reversed for LSB-first output) for `lens`.
pub fn codes(lens: &[u8], out: &mut Vec<u16>) {
    let mut count = [0u16; 16];
    for &l in lens {
        count[l as usize] += 1;
    }
    count[0] = 0;
    let mut next = [0u32; 16];
    let mut code = 0u32;
    for bits in 1..16 {
        code = (code + count[bits - 1] as u32) << 1;
        next[bits] = code;
    }
    out.clear();
    out.extend(lens.iter().map(|&l| {
        if l == 0 {
            0
        } else {
            let c = next[l as usize];
            next[l as usize] += 1;
            reverse(c, l as u32) as u16
        }
    }));
}

const PRIMARY: u32 = 10;
const SUB_FLAG: u32 = 1 << 31;

/// Two-level lookup table decoder.
///
/// Entry layout: `sym << 8 | len` for a leaf (len 0 = invalid code) or
/// `SUB_FLAG | offset << 8 | subbits` for a pointer to a second-level table.
pub struct Decoder {
    table: Vec<u32>,
}

impl Decoder {
    /// Build from lengths that passed `check_lengths`.
    pub fn new(lens: &[u8]) -> Decoder {
        let mut codes_v = Vec::with_capacity(lens.len());
        codes(lens, &mut codes_v);
        let psize = 1usize << PRIMARY;
        let mut table = vec![0u32; psize];
        // Longest code per primary prefix decides each sub-table's size.
        let mut sub_bits = vec![0u8; psize];
        for (sym, &l) in lens.iter().enumerate() {
            if l as u32 > PRIMARY {
                let p = (codes_v[sym] as usize) & (psize - 1);
                sub_bits[p] = sub_bits[p].max(l - PRIMARY as u8);
            }
        }
        for p in 0..psize {
            if sub_bits[p] > 0 {
                let off = table.len();
                table.resize(off + (1 << sub_bits[p]), 0);
                table[p] = SUB_FLAG | (off as u32) << 8 | sub_bits[p] as u32;
            }
        }
        for (sym, &l) in lens.iter().enumerate() {
            if l == 0 {
                continue;
            }
            let code = codes_v[sym] as usize;
            let l = l as u32;
            if l <= PRIMARY {
                let mut i = code;
                while i < psize {
                    table[i] = (sym as u32) << 8 | l;
                    i += 1 << l;
                }
            } else {
                let e = table[code & (psize - 1)];
                let off = ((e & !SUB_FLAG) >> 8) as usize;
                let sb = e & 0xff;
                let rest = l - PRIMARY;
                let mut i = code >> PRIMARY;
                while i < (1 << sb) {
                    table[off + i] = (sym as u32) << 8 | l;
                    i += 1 << rest;
                }
            }
        }
        Decoder { table }
    }

    /// Look up the buffered bits: returns (symbol, code length); length 0
    /// means the bits do not form a code (unused code of an incomplete set).
    #[inline]
    pub fn lookup(&self, bits: u64) -> (u16, u32) {
        let e = self.table[(bits as usize) & ((1 << PRIMARY) - 1)];
        let e = if e & SUB_FLAG != 0 {
            let off = ((e & !SUB_FLAG) >> 8) as usize;
            let sb = e & 0xff;
            self.table[off + ((bits >> PRIMARY) as usize & ((1 << sb) - 1))]
        } else {
            e
        };
        ((e >> 8) as u16, e & 0xff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_tables_agree() {
        for len in 3..=258u16 {
            let c = len_code(len);
            assert!(LEN_BASE[c] <= len, "len {len}");
            if c < 28 {
                assert!(len < LEN_BASE[c] + (1 << LEN_EXTRA[c]) || c == 27 && len < 258);
            }
        }
        for dist in 1..=32768u32 {
            let c = dist_code(dist as u16);
            assert!(DIST_BASE[c] as u32 <= dist);
            assert!(dist < DIST_BASE[c] as u32 + (1 << DIST_EXTRA[c]));
        }
    }

    #[test]
    fn length_checks() {
        assert_eq!(check_lengths(&[1, 0, 0], true), Ok(()));
        assert_eq!(
            check_lengths(&[1, 0, 0], false),
            Err(CodeProblem::Incomplete)
        );
        assert_eq!(
            check_lengths(&[1, 1, 1], true),
            Err(CodeProblem::OverSubscribed)
        );
        assert_eq!(
            check_lengths(&[2, 2, 2], true),
            Err(CodeProblem::Incomplete)
        );
        assert_eq!(check_lengths(&[1, 2, 2], true), Ok(()));
        assert_eq!(check_lengths(&[0, 0], true), Ok(()));
    }
}
