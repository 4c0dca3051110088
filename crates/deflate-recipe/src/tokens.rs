//! Tokens (literals and matches) and block descriptions: the parsed form of a
//! deflate stream from which the exact bits can be written again.

/// One LZ77 token. Packed: low 16 bits = distance (0 for a literal), high
/// 16 bits = match length or literal byte. Length [`IRREGULAR_258`] marks a
/// 258-byte match written as code 284 with extra bits 31.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Token(pub u32);

/// Length value used for the irregular encoding of 258.
pub const IRREGULAR_258: u16 = 259;

impl Token {
    /// A literal byte.
    #[inline]
    pub fn lit(b: u8) -> Token {
        Token((b as u32) << 16)
    }
    /// A match (len 3..=258 or [`IRREGULAR_258`], dist 1..=32768).
    #[inline]
    pub fn matched(len: u16, dist: u16) -> Token {
        Token((len as u32) << 16 | dist as u32)
    }
    /// True for a literal.
    #[inline]
    pub fn is_lit(self) -> bool {
        self.0 & 0xffff == 0
    }
    /// Distance (0 for a literal). 32768 is stored as 0x8000.
    #[inline]
    pub fn dist(self) -> u16 {
        self.0 as u16
    }
    /// Raw length field (literal byte for literals).
    #[inline]
    pub fn raw_len(self) -> u16 {
        (self.0 >> 16) as u16
    }
    /// Plaintext bytes covered.
    #[inline]
    pub fn span(self) -> usize {
        self.span_u32() as usize
    }

    /// [`span`](Self::span) as a u32 and without branches, so that sums
    /// over slices vectorise.
    #[inline]
    fn span_u32(self) -> u32 {
        let l = self.0 >> 16;
        // IRREGULAR_258 (259) covers 258 bytes.
        let l = l - (l == IRREGULAR_258 as u32) as u32;
        if self.is_lit() {
            1
        } else {
            l
        }
    }
}

/// Plaintext bytes covered by `tokens`.
pub fn total_span(tokens: &[Token]) -> u64 {
    // Summed in slices short enough that a u32 cannot overflow.
    tokens
        .chunks(1 << 16)
        .map(|c| c.iter().map(|t| t.span_u32()).sum::<u32>() as u64)
        .sum()
}

/// The shortest prefix of `tokens` covering at least `need` bytes:
/// (its length, the bytes it covers); all of `tokens` if they cover less.
/// Stored blocks drop megabytes of one-byte predictions: counted in
/// slices that vectorise, one token at a time only in the last slice.
pub fn cover(tokens: &[Token], need: u64) -> (usize, u64) {
    const SLICE: usize = 64;
    let (mut k, mut covered) = (0, 0u64);
    for c in tokens.chunks(SLICE) {
        let s = c.iter().map(|t| t.span_u32()).sum::<u32>() as u64;
        if covered + s < need {
            covered += s;
            k += c.len();
            continue;
        }
        for t in c {
            if covered >= need {
                break;
            }
            covered += t.span_u32() as u64;
            k += 1;
        }
        break;
    }
    (k, covered)
}

/// A dynamic block's header exactly as transmitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynHeader {
    /// Number of literal/length code lengths (257..=288).
    pub hlit: u16,
    /// Number of distance code lengths (1..=32).
    pub hdist: u8,
    /// Number of code-length-code lengths sent (4..=19).
    pub hclen: u8,
    /// Code-length-code lengths indexed by symbol 0..=18.
    pub cl_lens: [u8; 19],
    /// Run-length coded lengths: (symbol 0..=18, extra bits value).
    pub rle: Vec<(u8, u8)>,
}

impl DynHeader {
    /// Expand the run-length coding into (literal lengths, distance lengths).
    /// Only call on headers that came from the parser or a builder.
    pub fn lengths(&self) -> (Vec<u8>, Vec<u8>) {
        let n = self.hlit as usize + self.hdist as usize;
        let mut all = Vec::with_capacity(n);
        for &(sym, extra) in &self.rle {
            match sym {
                0..=15 => all.push(sym),
                16 => {
                    let prev = *all.last().unwrap_or(&0);
                    all.extend(std::iter::repeat(prev).take(3 + extra as usize));
                }
                17 => all.extend(std::iter::repeat(0).take(3 + extra as usize)),
                _ => all.extend(std::iter::repeat(0).take(11 + extra as usize)),
            }
        }
        all.resize(n, 0);
        let dist = all.split_off(self.hlit as usize);
        (all, dist)
    }
}

/// How a block is coded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Stored block; `pad` holds the bits skipped to reach the byte boundary.
    Stored {
        /// Byte count.
        len: u16,
        /// Value of the padding bits after the 3 header bits.
        pad: u8,
    },
    /// Fixed Huffman codes.
    Fixed,
    /// Dynamic Huffman codes with the header as sent.
    Dynamic(Box<DynHeader>),
}

/// A block's shape: everything except its tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockHead {
    /// BFINAL bit.
    pub last: bool,
    /// Block type and header.
    pub kind: BlockKind,
}

/// Extra bits value used for a length.
#[inline]
pub fn len_symbol(len: u16) -> (usize, u32, u32) {
    use crate::huffman::{len_code, LEN_BASE, LEN_EXTRA};
    if len == IRREGULAR_258 {
        return (28 - 1, 31, 5);
    }
    let c = len_code(len);
    (c, (len - LEN_BASE[c]) as u32, LEN_EXTRA[c] as u32)
}
