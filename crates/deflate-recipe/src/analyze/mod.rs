//! Analysis: gzip bytes → plaintext + recipe.

use std::io::{Read, Write};

use crate::bits::BitReader;
use crate::error::{RecipeError, Result};
use crate::gzip;
use crate::hdrpred::{self, Freqs};
use crate::huffman::CL_ORDER;
use crate::inflate::{Inflater, Sink};
use crate::model::ModelSpec;
use crate::recipe::{
    self, Packer, Recipe, BF_BYTES, BF_EXPLICIT, BF_LAST, BF_TYPE_SHIFT, FORMAT_VERSION,
};
use crate::tokens::{BlockHead, BlockKind, DynHeader, Token};
use crate::varint;

mod candidate;

use candidate::Candidate;

/// Plaintext offsets at which candidates clearly worse than the best are
/// dropped (candidates that still tie keep running: e.g. pgzip block sizes
/// only differ once the smaller block ends).
const PRUNE_AT: [u64; 6] = [32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20];
/// Plaintext after which the best candidate model is chosen.
const SELECT_AFTER: u64 = 2 << 20;
/// Plaintext after which a candidate left alone by pruning is run on
/// several threads even if a pigz twin could still be forked from it
/// (pigz twins learn their block size before this); one that has no such
/// twin goes at once (a 10.8 MB Go -6 layer: from 131 KiB instead of 577
/// KiB, analysed ~5 % faster on 2 threads).
const EARLY_PARALLEL: u64 = 512 << 10;
/// Plaintext parsed before the candidates are given it, several at once
/// (see `Analyzer::flush`): starting the helper threads each time costs
/// little against a quarter MiB of searching per candidate.
const BACKLOG: usize = 256 << 10;

struct Analyzer<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
    meta: Vec<u8>,
    meta_packer: Packer,
    tok_packer: Packer,
    /// Prune checkpoints passed.
    pruned: usize,
    cands: Vec<Candidate>,
    total: u64,
    head: Option<BlockHead>,
    freqs: Freqs,
    /// Plaintext offset in the current member.
    pos: u64,
    /// Tokens so far in the current block.
    ntok: u64,
    /// Frequencies of block prefixes ending at encoder chunk boundaries
    /// (an encoder that keeps a block open across chunks, like klauspost,
    /// built the header from the first chunk only).
    snaps: Vec<(u64, u64, Freqs)>,
    /// Plaintext offset where the current block started.
    block_pos: u64,
    /// Next chunk boundaries to snapshot at, per boundary scheme.
    bounds: [u64; 2],
    /// Threads the analysis may use.
    threads: usize,
    /// Stretches parsed (tokens, plaintext, stored) not yet given to the
    /// candidates, while several run (see `flush`).
    backlog: Vec<(Vec<Token>, Vec<u8>, bool)>,
    backlog_bytes: usize,
    /// pgzip block size learnt from the first sync marker (0: none yet).
    segment: u64,
    /// Plaintext at which the candidates are next weighed to keep one
    /// (from [`SELECT_AFTER`]; see `select_or_defer`).
    select_at: u64,
    /// Candidates `Pigz { level, block: 0, dict }` not run yet because the
    /// `Zlib { level }` candidate predicts the same until a block size is
    /// learnt; forked from it then (in this order, as if they had been
    /// at the end of the list all along).
    deferred: Vec<(u8, bool)>,
}

/// Take out the pigz candidates with no block size whose plain zlib twin
/// is a candidate too (see `Analyzer::deferred`).
fn defer_pigz(specs: Vec<ModelSpec>) -> (Vec<ModelSpec>, Vec<(u8, bool)>) {
    let mut deferred = Vec::new();
    let mut keep = Vec::new();
    for &s in &specs {
        match s {
            ModelSpec::Pigz {
                level,
                block: 0,
                dict,
            } if specs.contains(&ModelSpec::Zlib { level }) => deferred.push((level, dict)),
            s => keep.push(s),
        }
    }
    // Forks are appended after every kept candidate, so the deferred ones
    // must have been last in the list for ties to break the same way.
    let last_kept = specs
        .iter()
        .rposition(|s| keep.contains(s))
        .map_or(0, |i| i + 1);
    if last_kept > keep.len() {
        return (specs, Vec::new());
    }
    (keep, deferred)
}

/// klauspost writes 65535-byte chunks; pgzip restarts them every block.
const CHUNK: u64 = 65535;

/// Next chunk boundaries after `pos`: from the stream start, and from the
/// start of the current pgzip block of `segment` bytes (if known).
fn next_bounds(pos: u64, segment: u64) -> [u64; 2] {
    let plain = (pos / CHUNK + 1) * CHUNK;
    if segment == 0 {
        return [plain, plain];
    }
    let seg = pos / segment * segment;
    [
        plain,
        (seg + ((pos - seg) / CHUNK + 1) * CHUNK).min(seg + segment),
    ]
}

impl<W: Write> Analyzer<W> {
    /// The first sync-flush marker of a stream ends pgzip's first block:
    /// its plaintext offset is the block size.
    fn learn_segment(&mut self) {
        self.segment = self.pos;
        if self.total < SELECT_AFTER && self.pos <= u32::MAX as u64 {
            let mut forks = Vec::new();
            for &(level, dict) in &self.deferred {
                let Some(twin) = self
                    .cands
                    .iter()
                    .find(|c| c.spec == ModelSpec::Zlib { level })
                else {
                    continue;
                };
                if let Some(model) = twin.model.fork_pigz(dict) {
                    let spec = ModelSpec::Pigz {
                        level,
                        block: 0,
                        dict,
                    };
                    forks.push(twin.fork(spec, model));
                }
            }
            self.cands.extend(forks);
        }
        self.deferred.clear();
        for c in &mut self.cands {
            if let ModelSpec::Pigz {
                level,
                block: 0,
                dict,
            } = c.spec
            {
                if self.pos <= u32::MAX as u64 {
                    let spec = ModelSpec::Pigz {
                        level,
                        block: self.pos as u32,
                        dict,
                    };
                    c.learn_segment(spec, self.pos as usize);
                }
                continue;
            }
            if let ModelSpec::Klauspost {
                level,
                segment: 0,
                dict,
            } = c.spec
            {
                if dict > 0 && self.pos > dict as u64 && self.pos <= u32::MAX as u64 {
                    let spec = ModelSpec::Klauspost {
                        level,
                        segment: self.pos as u32,
                        dict,
                    };
                    c.learn_segment(spec, self.pos as usize);
                }
            }
        }
        // A pigz twin that learnt the block size an explicit candidate
        // already had is the same model: keep the first, as ties would.
        let mut i = 0;
        while i < self.cands.len() {
            let dup = self.cands[..i]
                .iter()
                .any(|c| c.spec == self.cands[i].spec && c.cost() <= self.cands[i].cost());
            if dup {
                self.cands.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Flags and block size: in plaintext bytes when the block ends on an
    /// encoder chunk or block boundary (those sizes repeat and compress to
    /// nearly nothing), else in tokens (zlib's fixed token counts repeat).
    fn put_size(&mut self, flags: u8, ntokens: u64) {
        let span = self.pos - self.block_pos;
        let aligned =
            span > 0 && (span % CHUNK == 0 || (self.segment > 0 && self.pos % self.segment == 0));
        if aligned {
            self.meta.push(flags | BF_BYTES);
            varint::put(&mut self.meta, span);
        } else {
            self.meta.push(flags);
            varint::put(&mut self.meta, ntokens);
        }
    }

    /// Give every candidate the stretches parsed since the last flush,
    /// several candidates at once on as many threads. Each sees the same
    /// calls in the same order as if fed at once; whatever compares or
    /// changes candidates (pruning, selection, a learnt block size, the
    /// end of a stream) flushes first.
    fn flush(&mut self) {
        if self.backlog.is_empty() {
            return;
        }
        let backlog = std::mem::take(&mut self.backlog);
        self.backlog_bytes = 0;
        let feed = |c: &mut Candidate| {
            for (tokens, plain, stored) in &backlog {
                c.feed(tokens, plain, *stored);
            }
        };
        let helpers = self.threads.min(self.cands.len()) - 1;
        let next = std::sync::Mutex::new(self.cands.iter_mut());
        let take = || next.lock().ok().and_then(|mut it| it.next());
        std::thread::scope(|s| {
            for _ in 0..helpers {
                s.spawn(|| {
                    while let Some(c) = take() {
                        feed(c);
                    }
                });
            }
            while let Some(c) = take() {
                feed(c);
            }
        });
    }

    /// Drop candidates costing clearly more than the best one.
    fn prune(&mut self) {
        let best = self.cands.iter().map(|c| c.cost()).min().unwrap_or(0);
        let limit = best + best / 4 + 16;
        self.cands.retain(|c| c.cost() <= limit);
    }

    /// Keep the candidate with the fewest corrections, unless the one that
    /// predicts literals only is among the cheapest: then the plaintext so
    /// far told the models nothing (stored blocks, or no match: a layer
    /// that starts with compressed files), and choosing by list order
    /// there chose literals only, whose recipe then held every later match
    /// (15 % of a gzip -1 stream that starts with 5 MB of random bytes).
    /// The cheapest keep running and are weighed again at twice the
    /// plaintext.
    fn select_or_defer(&mut self) {
        let best = self.cands.iter().map(|c| c.cost()).min().unwrap_or(0);
        let undecided = self
            .cands
            .iter()
            .any(|c| c.spec == ModelSpec::Literals && c.cost() == best);
        if undecided {
            self.cands.retain(|c| c.cost() == best);
            self.select_at = self.total.saturating_mul(2);
        } else {
            self.select(1);
        }
    }

    /// Keep the `keep` candidates with the fewest corrections (stable order on ties).
    fn select(&mut self, keep: usize) {
        if self.cands.len() > keep {
            let mut order: Vec<usize> = (0..self.cands.len()).collect();
            order.sort_by_key(|&i| (self.cands[i].cost(), i));
            order.truncate(keep);
            order.sort_unstable();
            let mut i = 0;
            self.cands.retain(|_| {
                let k = order.contains(&i);
                i += 1;
                k
            });
        }
    }
}

impl<W: Write> Sink for Analyzer<W> {
    fn block_start(&mut self, head: &BlockHead) -> Result<()> {
        self.head = Some(head.clone());
        self.freqs.clear();
        self.ntok = 0;
        self.snaps.clear();
        self.block_pos = self.pos;
        self.bounds = next_bounds(self.pos, self.segment);
        Ok(())
    }

    fn data(&mut self, tokens: &[Token], plain: &[u8]) -> Result<()> {
        self.out.write_all(plain)?;
        self.crc.update(plain);
        self.total += plain.len() as u64;
        if matches!(
            self.head.as_ref().map(|h| &h.kind),
            Some(BlockKind::Dynamic(_))
        ) {
            for &t in tokens {
                if self.pos >= *self.bounds.iter().min().unwrap_or(&u64::MAX) {
                    for b in self.bounds.iter_mut() {
                        if self.pos >= *b {
                            if self.ntok > 0 && !self.snaps.iter().any(|s| s.0 == self.ntok) {
                                let bytes = self.pos - self.block_pos;
                                self.snaps.push((self.ntok, bytes, self.freqs.clone()));
                            }
                            *b = u64::MAX;
                        }
                    }
                }
                // klauspost's lazy levels cut token blocks at 2^15 tokens.
                if self.ntok == 1 << 15 {
                    self.snaps.push((self.ntok, 0, self.freqs.clone()));
                }
                self.freqs.add(std::slice::from_ref(&t));
                self.ntok += 1;
                self.pos += t.span() as u64;
            }
        } else {
            self.pos += plain.len() as u64;
        }
        let stored = matches!(
            self.head.as_ref().map(|h| &h.kind),
            Some(BlockKind::Stored { .. })
        );
        if self.cands.len() > 1 && self.threads > 1 {
            self.backlog.push((tokens.to_vec(), plain.to_vec(), stored));
            self.backlog_bytes += plain.len();
            if self.backlog_bytes >= BACKLOG {
                self.flush();
            }
        } else {
            for c in &mut self.cands {
                c.feed(tokens, plain, stored);
            }
        }
        if self.total >= SELECT_AFTER {
            if self.cands.len() > 1 && self.total >= self.select_at {
                self.flush();
                self.select_or_defer();
            }
            if let [c] = &mut self.cands[..] {
                c.go_parallel(self.threads);
                self.tok_packer.absorb(&mut c.diff.out)?;
            }
        } else if self.total >= PRUNE_AT[self.pruned.min(PRUNE_AT.len() - 1)]
            && self.pruned < PRUNE_AT.len()
        {
            self.pruned += 1;
            self.flush();
            self.prune();
            // Alone from here on: no need to wait for the selection, unless
            // a pigz twin may still be forked from it (a split model cannot
            // be forked).
            if let [c] = &mut self.cands[..] {
                let twin = self
                    .deferred
                    .iter()
                    .any(|&(level, _)| c.spec == ModelSpec::Zlib { level });
                if self.total >= EARLY_PARALLEL || !twin {
                    c.go_parallel(self.threads);
                }
            }
        }
        Ok(())
    }

    fn block_end(&mut self, ntokens: u64) -> Result<()> {
        self.meta_packer.absorb(&mut self.meta)?;
        let head = self.head.take().expect("block started");
        let mut flags = (head.last as u8) * BF_LAST;
        // pgzip and pigz end their blocks with empty stored (or, pigz,
        // empty fixed) blocks.
        let marker = head.kind == (BlockKind::Stored { len: 0, pad: 0 })
            || (head.kind == BlockKind::Fixed && ntokens == 0);
        // Only while no earlier member had plaintext: the learnt block size
        // changes the model spec, which the rebuild applies to every member.
        if marker && !head.last && self.segment == 0 && self.pos > 0 && self.total == self.pos {
            self.flush();
            self.learn_segment();
        }
        match &head.kind {
            BlockKind::Stored { len, pad } => {
                self.meta.push(flags);
                varint::put(&mut self.meta, *len as u64);
                self.meta.push(*pad);
            }
            BlockKind::Fixed => {
                flags |= 1 << BF_TYPE_SHIFT;
                self.put_size(flags, ntokens);
            }
            BlockKind::Dynamic(h) => {
                flags |= 2 << BF_TYPE_SHIFT;
                // The prefix a header was built from: whole block (0), or a
                // snapshot given in bytes (chunk boundary, odd) or tokens (even).
                let found = hdrpred::find(&self.freqs, h).map(|id| (id, 0)).or_else(|| {
                    self.snaps.iter().find_map(|(k, bytes, f)| {
                        let code = if *bytes > 0 { bytes << 1 | 1 } else { k << 1 };
                        hdrpred::find(f, h).map(|id| (id, code))
                    })
                });
                match found {
                    Some((id, k)) => {
                        self.put_size(flags, ntokens);
                        self.meta.push(id);
                        varint::put(&mut self.meta, k);
                    }
                    None => {
                        self.put_size(flags | BF_EXPLICIT, ntokens);
                        write_header(&mut self.meta, h);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Explicit dynamic header record.
pub(crate) fn write_header(out: &mut Vec<u8>, h: &DynHeader) {
    out.push((h.hlit - 257) as u8);
    out.push(h.hdist - 1);
    out.push(h.hclen - 4);
    for &s in CL_ORDER.iter().take(h.hclen as usize) {
        out.push(h.cl_lens[s]);
    }
    varint::put(out, h.rle.len() as u64);
    for &(sym, extra) in &h.rle {
        out.push(sym);
        if sym >= 16 {
            out.push(extra);
        }
    }
}

/// Analyse with an explicit candidate list (the first is used if only one).
pub fn analyze_with<R: Read, W: Write>(
    gz: R,
    plain_out: W,
    candidates: Option<&[ModelSpec]>,
) -> Result<Recipe> {
    let mut br = BitReader::new(gz);
    let mut a = Analyzer {
        out: plain_out,
        crc: crc32fast::Hasher::new(),
        meta: Vec::new(),
        meta_packer: Packer::default(),
        tok_packer: Packer::default(),
        pruned: 0,
        cands: candidates
            .unwrap_or_default()
            .iter()
            .map(|&s| Candidate::new(s))
            .collect(),
        total: 0,
        head: None,
        freqs: Freqs::default(),
        pos: 0,
        ntok: 0,
        snaps: Vec::new(),
        block_pos: 0,
        bounds: [0; 2],
        threads: crate::threads(),
        backlog: Vec::new(),
        backlog_bytes: 0,
        segment: 0,
        deferred: Vec::new(),
        select_at: SELECT_AFTER,
    };
    let mut members = Vec::new();
    loop {
        // Either another member, or trailing bytes kept verbatim.
        let mut tail = Vec::new();
        let at = br.offset();
        let m0 = br.byte()?;
        let m1 = if m0 == Some(0x1f) { br.byte()? } else { None };
        if m0 == Some(0x1f) && m1 == Some(0x8b) {
            let hdr = gzip::read_header(&mut br)?;
            if a.cands.is_empty() {
                let (specs, deferred) = defer_pigz(ModelSpec::candidates_for(&hdr));
                a.cands = specs.into_iter().map(Candidate::new).collect();
                a.deferred = deferred;
            }
            a.meta.push(recipe::TAG_MEMBER);
            varint::put(&mut a.meta, hdr.len() as u64);
            a.meta.extend_from_slice(&hdr);
            a.crc = crc32fast::Hasher::new();
            a.pos = 0;
            let before = a.total;
            Inflater::new().run(&mut br, &mut a)?;
            a.flush();
            for c in &mut a.cands {
                c.finish_stream().map_err(|e| {
                    e.context(|| format!("gzip member {} (from byte {at})", members.len() + 1))
                })?;
            }
            members.push(a.total - before);
            a.meta.push(br.align() as u8);
            let mut trailer = [0u8; 8];
            if !br.bytes_exact(&mut trailer)? {
                return Err(RecipeError::InvalidGzip {
                    offset: br.offset(),
                    reason: "truncated member trailer".into(),
                });
            }
            let mut want = [0u8; 8];
            let crc = std::mem::take(&mut a.crc).finalize();
            want[..4].copy_from_slice(&crc.to_le_bytes());
            want[4..].copy_from_slice(&((a.total - before) as u32).to_le_bytes());
            if trailer == want {
                a.meta.push(0);
            } else {
                a.meta.push(1);
                a.meta.extend_from_slice(&trailer);
            }
            continue;
        }
        if members.is_empty() {
            return Err(RecipeError::InvalidGzip {
                offset: at,
                reason: "missing gzip magic 1f 8b (not a gzip stream)".into(),
            });
        }
        tail.extend(m0);
        tail.extend(m1);
        while br.bytes_some(&mut tail, 1 << 20)? > 0 {}
        if !tail.is_empty() {
            a.meta.push(recipe::TAG_GARBAGE);
            varint::put(&mut a.meta, tail.len() as u64);
            a.meta.extend_from_slice(&tail);
        }
        a.meta.push(recipe::TAG_END);
        break;
    }
    a.select(1);
    a.out.flush()?;
    let cand = a
        .cands
        .pop()
        .unwrap_or_else(|| Candidate::new(ModelSpec::Literals));
    Ok(Recipe {
        version: FORMAT_VERSION,
        model: cand.spec,
        members,
        meta: a.meta_packer.finish(&a.meta)?,
        toks: a.tok_packer.finish(&cand.diff.out)?,
    })
}
