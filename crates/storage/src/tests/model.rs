//! Model-based property test: random sequences of appends, flushes, reopenings and reads
//! against a plain list of the batches that must be in the log.

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    /// Append this many test batches in one call.
    Append(usize),
    Flush,
    /// Clean close and reopen.
    Reopen,
    /// Drop without closing (as after a crash with the page cache intact) and reopen.
    Crash,
    /// Read from the batch at this index (modulo the count) with this max_bytes.
    Read(usize, u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..4).prop_map(Op::Append),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        3 => (any::<usize>(), 1u32..20_000).prop_map(|(i, m)| Op::Read(i, m)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..40), segment_kib in 1u64..16, interval in 0u32..3000) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes: segment_kib * 1024, index_interval_bytes: interval, ..small_config() };
        let mut m = Some(manager(dir.path()));
        let mut log = m.as_ref().unwrap().create_log(&tp(0), config.clone()).unwrap();
        let mut model: Vec<Vec<u8>> = Vec::new();
        let mut end = 0i64;
        let mut high_watermark = 0i64;
        for op in ops {
            match op {
                Op::Append(n) => {
                    let mut bytes = Vec::new();
                    let mut batches = Vec::new();
                    let mut at = end;
                    for _ in 0..n {
                        let b = expected_batch(at);
                        at += expected_count(at);
                        bytes.extend_from_slice(&b);
                        batches.push(b);
                    }
                    let info = log.append(&bytes).unwrap();
                    prop_assert_eq!(info.base_offset, end);
                    prop_assert_eq!(info.last_offset + 1, at);
                    end = at;
                    model.extend(batches);
                }
                Op::Flush => log.flush().unwrap(),
                Op::Reopen | Op::Crash => {
                    if matches!(op, Op::Reopen) {
                        m.as_ref().unwrap().close().unwrap();
                    }
                    drop(log);
                    drop(m.take());
                    m = Some(manager(dir.path()));
                    log = m.as_ref().unwrap().get_log(&tp(0)).unwrap().unwrap();
                    log.set_config(config.clone());
                }
                Op::Read(i, max) if !model.is_empty() => {
                    let i = i % model.len();
                    let base = crate::batch::BatchHeader::parse(&model[i]).unwrap().base_offset;
                    // Durable visibility: what is below the high watermark is readable; past
                    // it a read may return nothing yet (the flusher runs beside us).
                    let visible = base < log.high_watermark();
                    let bytes = log.read_bytes(base, max).unwrap();
                    // Whole batches from i on, as many as fit (at least one).
                    let mut want = model[i].clone();
                    for b in &model[i + 1..] {
                        if want.len() + b.len() > max as usize { break; }
                        want.extend_from_slice(b);
                    }
                    prop_assert!(bytes.len() <= want.len());
                    prop_assert_eq!(&bytes[..], &want[..bytes.len()]);
                    prop_assert!(!visible || bytes.len() >= model[i].len());
                }
                Op::Read(..) => {}
            }
            prop_assert_eq!(log.log_end_offset(), end);
            let hwm = log.high_watermark();
            prop_assert!(hwm <= end && hwm >= high_watermark, "high watermark {} went back from {} or past the end {}", hwm, high_watermark, end);
            high_watermark = hwm;
        }
        prop_assert_eq!(read_all(&log), model);
    }
}
