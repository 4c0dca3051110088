//! The split models predict exactly what they predict on one thread.

use super::*;
use crate::model::ModelSpec;

/// ~3.3 MB: word salad (many short matches), noise, and zero runs
/// starting 5 KB before piece boundaries (1 KiB past 2 MiB and 3 MiB; the
/// one at 1152 KiB sat on a boundary when Go's pieces were 384 KiB, and
/// is now inside a piece): long ones, where the cold piece and the true
/// run step through the zeros 258 bytes at a time out of phase and never
/// meet, and a shorter one where they meet only past it.
pub(in crate::model) fn input() -> Vec<u8> {
    const RUNS: [(u64, usize); 3] = [
        ((1152 << 10) + OFF, 60_000),
        ((2 << 20) + OFF, 60_000),
        ((3 << 20) + OFF, 11_000),
    ];
    let mut x = 0x2545f4914f6cdd1du64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let words: Vec<Vec<u8>> = (0..300)
        .map(|_| {
            let n = 2 + rnd() % 8;
            (0..n).map(|_| b'a' + (rnd() % 10) as u8).collect()
        })
        .collect();
    let mut out = Vec::new();
    let mut placed = 0;
    while out.len() < 3_300_000 {
        if let Some(&(at, len)) = RUNS.get(placed) {
            if out.len() as u64 >= at - 5000 {
                out.truncate(at as usize - 5000);
                out.resize(out.len() + len, 0);
                placed += 1;
            }
        }
        match rnd() % 50 {
            0 => out.resize(out.len() + (rnd() % 3000) as usize, 0),
            1 => out.extend((0..rnd() % 20_000).map(|_| rnd() as u8)),
            _ => {
                for _ in 0..5 + rnd() % 100 {
                    out.extend_from_slice(&words[(rnd() % 300) as usize]);
                    out.push(b' ');
                }
                out.push(b'\n');
            }
        }
    }
    out
}

/// Feed `data` in the chunks the model asks for, as analysis does,
/// going parallel at the first chunk boundary at or past `switch_at`.
fn run(spec: ModelSpec, threads: usize, switch_at: usize, data: &[u8]) -> Vec<Token> {
    let mut m = spec.build();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut split = threads < 2;
    while pos < data.len() {
        if !split && pos >= switch_at {
            m = m.parallel(threads).expect("splittable");
            split = true;
        }
        let n = m.next_chunk().min(data.len() - pos);
        m.predict(&data[pos..pos + n], &mut out);
        pos += n;
    }
    if !split {
        m = m.parallel(threads).expect("splittable");
    }
    m.finish(&mut out);
    out
}

/// The split model predicts exactly what the sequential one does, from
/// the start (rebuild) or taking over mid-stream (analysis), on any
/// thread count, whether pieces meet or not.
#[test]
fn same_tokens_as_one_thread() {
    let data = input();
    let before = FALLBACKS.load(Ordering::Relaxed);
    let late = LATE_MEETINGS.load(Ordering::Relaxed);
    let mut specs: Vec<ModelSpec> = (1..=9).map(|level| ModelSpec::Zlib { level }).collect();
    specs.extend((4..=9).map(|level| ModelSpec::GoStd { level }));
    for (level, block, dict) in [(6, 131072, true), (1, 100_000, true), (6, 100_000, false)] {
        specs.push(ModelSpec::Pigz { level, block, dict });
    }
    specs.push(ModelSpec::Pigz {
        level: 6,
        block: 0,
        dict: true,
    });
    for (level, segment, dict) in [
        (5, 1 << 18, 16 << 10),
        (1, 100_000, 0),
        (6, 1 << 20, 1 << 15),
    ] {
        specs.push(ModelSpec::Klauspost {
            level,
            segment,
            dict,
        });
    }
    for spec in specs {
        let want = run(spec, 1, 0, &data);
        for (threads, switch_at) in [(2, 0), (3, 0), (2, 2 << 20), (2, (1 << 20) + 7)] {
            let got = run(spec, threads, switch_at, &data);
            assert_eq!(
                got.len(),
                want.len(),
                "{spec:?} threads {threads} from {switch_at}"
            );
            let diff = got.iter().zip(&want).position(|(a, b)| a != b);
            assert_eq!(diff, None, "{spec:?} threads {threads} from {switch_at}");
        }
    }
    assert!(
        FALLBACKS.load(Ordering::Relaxed) > before,
        "the no-meeting path was not taken"
    );
    assert!(
        LATE_MEETINGS.load(Ordering::Relaxed) > late,
        "no meeting was looked for on the calling thread"
    );
}

/// Short streams end inside the first piece or right after a boundary.
#[test]
fn short_streams() {
    let data = input();
    for len in [
        0,
        1,
        300,
        70_000,
        SEG as usize + 5,
        SEG as usize + OFF as usize + 100,
        SEG as usize + 40_000,
        (384 << 10) + OFF as usize + 100,
        (1 << 20) + OFF as usize + 100,
    ] {
        for spec in [
            ModelSpec::Zlib { level: 6 },
            ModelSpec::Zlib { level: 1 },
            ModelSpec::GoStd { level: 6 },
            ModelSpec::Pigz {
                level: 6,
                block: 131072,
                dict: true,
            },
        ] {
            let want = run(spec, 1, 0, &data[..len]);
            assert!(run(spec, 2, 0, &data[..len]) == want, "{spec:?} len {len}");
        }
    }
}

#[test]
fn meet_needs_same_offset_and_base() {
    let c = Clean::new;
    assert_eq!(
        meet(&[c(5, 0, 1), c(9, 0, 2)], &[c(7, 0, 1), c(9, 0, 4)]),
        Some((2, 4))
    );
    assert_eq!(meet(&[c(9, 32768, 2)], &[c(9, 0, 4)]), None);
    assert_eq!(meet(&[c(3, 0, 2)], &[]), None);
}
