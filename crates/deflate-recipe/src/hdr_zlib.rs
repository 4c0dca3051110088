//! zlib's dynamic header (trees.c as described in DEFLATE-NOTES §2.7/2.9):
//! heap-built Huffman trees with the depth tie-break, zlib's overflow fix
//! for over-long codes, per-tree run-length coding of the lengths and the
//! code-length code sent up to its last used entry in transmission order.

use crate::hdrpred::finish_header;
use crate::tokens::DynHeader;

const HEAP_SIZE: usize = 2 * 286 + 1;

/// Build one tree; returns (lengths, max_code).
fn build_tree(freq_in: &[u32], max_length: u8) -> (Vec<u8>, usize) {
    let elems = freq_in.len();
    let mut freq = vec![0u32; HEAP_SIZE];
    freq[..elems].copy_from_slice(freq_in);
    let mut depth = vec![0u8; HEAP_SIZE];
    let mut len = vec![0u8; HEAP_SIZE];
    let mut dad = vec![0usize; HEAP_SIZE];
    let mut heap = vec![0usize; HEAP_SIZE + 1];
    let mut heap_len = 0;
    let mut heap_max = HEAP_SIZE;
    let mut max_code: isize = -1;
    for (n, &f) in freq_in.iter().enumerate() {
        if f != 0 {
            heap_len += 1;
            heap[heap_len] = n;
            max_code = n as isize;
        }
    }
    // At least two codes: add dummies as zlib does.
    while heap_len < 2 {
        let node = if max_code < 2 {
            max_code += 1;
            max_code as usize
        } else {
            0
        };
        heap_len += 1;
        heap[heap_len] = node;
        freq[node] = 1;
        depth[node] = 0;
    }
    let smaller = |freq: &[u32], depth: &[u8], n: usize, m: usize| {
        freq[n] < freq[m] || (freq[n] == freq[m] && depth[n] <= depth[m])
    };
    let down = |heap: &mut [usize], heap_len: usize, freq: &[u32], depth: &[u8], mut k: usize| {
        let v = heap[k];
        let mut j = k << 1;
        while j <= heap_len {
            if j < heap_len && smaller(freq, depth, heap[j + 1], heap[j]) {
                j += 1;
            }
            if smaller(freq, depth, v, heap[j]) {
                break;
            }
            heap[k] = heap[j];
            k = j;
            j <<= 1;
        }
        heap[k] = v;
    };
    for n in (1..=heap_len / 2).rev() {
        down(&mut heap, heap_len, &freq, &depth, n);
    }
    let mut node = elems;
    loop {
        let n = heap[1];
        heap[1] = heap[heap_len];
        heap_len -= 1;
        down(&mut heap, heap_len, &freq, &depth, 1);
        let m = heap[1];
        heap_max -= 1;
        heap[heap_max] = n;
        heap_max -= 1;
        heap[heap_max] = m;
        freq[node] = freq[n] + freq[m];
        depth[node] = depth[n].max(depth[m]) + 1;
        dad[n] = node;
        dad[m] = node;
        heap[1] = node;
        node += 1;
        down(&mut heap, heap_len, &freq, &depth, 1);
        if heap_len < 2 {
            break;
        }
    }
    heap_max -= 1;
    heap[heap_max] = heap[1];

    // gen_bitlen
    let max_code = max_code as usize;
    let mut bl_count = [0u32; 16];
    len[heap[heap_max]] = 0;
    let mut overflow = 0i32;
    for &n in &heap[heap_max + 1..HEAP_SIZE] {
        let mut bits = len[dad[n]] + 1;
        if bits > max_length {
            bits = max_length;
            overflow += 1;
        }
        len[n] = bits;
        if n > max_code {
            continue;
        }
        bl_count[bits as usize] += 1;
    }
    if overflow > 0 {
        while overflow > 0 {
            let mut bits = max_length as usize - 1;
            while bl_count[bits] == 0 {
                bits -= 1;
            }
            bl_count[bits] -= 1;
            bl_count[bits + 1] += 2;
            bl_count[max_length as usize] -= 1;
            overflow -= 2;
        }
        let mut h = HEAP_SIZE;
        for bits in (1..=max_length as usize).rev() {
            let mut n = bl_count[bits];
            while n != 0 {
                h -= 1;
                let m = heap[h];
                if m > max_code {
                    continue;
                }
                len[m] = bits as u8;
                n -= 1;
            }
        }
    }
    len.truncate(elems);
    (len, max_code)
}

/// zlib's scan_tree/send_tree run-length coding of one tree's lengths.
fn rle_tree(lens: &[u8], out: &mut Vec<(u8, u8)>) {
    let max_code = lens.len() - 1;
    let mut prevlen: i32 = -1;
    let mut nextlen = lens[0] as i32;
    let mut count = 0;
    let (mut max_count, mut min_count) = if nextlen == 0 { (138, 3) } else { (7, 4) };
    for n in 0..=max_code {
        let curlen = nextlen;
        nextlen = if n < max_code { lens[n + 1] as i32 } else { -2 };
        count += 1;
        if count < max_count && curlen == nextlen {
            continue;
        } else if count < min_count {
            for _ in 0..count {
                out.push((curlen as u8, 0));
            }
        } else if curlen != 0 {
            if curlen != prevlen {
                out.push((curlen as u8, 0));
                count -= 1;
            }
            out.push((16, (count - 3) as u8));
        } else if count <= 10 {
            out.push((17, (count - 3) as u8));
        } else {
            out.push((18, (count - 11) as u8));
        }
        count = 0;
        prevlen = curlen;
        if nextlen == 0 {
            (max_count, min_count) = (138, 3);
        } else if curlen == nextlen {
            (max_count, min_count) = (6, 3);
        } else {
            (max_count, min_count) = (7, 4);
        }
    }
}

/// The header zlib writes for these frequencies (EOB must be counted).
pub fn zlib_header(lit: &[u32; 286], dist: &[u32; 30]) -> DynHeader {
    let (ll, lmax) = build_tree(lit, 15);
    let (dl, dmax) = build_tree(dist, 15);
    let mut rle = Vec::new();
    rle_tree(&ll[..=lmax], &mut rle);
    rle_tree(&dl[..=dmax], &mut rle);
    let mut cl_freq = [0u32; 19];
    for &(s, _) in &rle {
        cl_freq[s as usize] += 1;
    }
    let (cl, _) = build_tree(&cl_freq, 7);
    finish_header(lmax + 1, dmax + 1, &cl, rle)
}
