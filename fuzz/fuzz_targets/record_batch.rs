//! Record batch validation, compressed batches included: the input is a produce request's
//! records bytes. Header validation, then the streaming record validation with a small
//! decompression bound, then a full record walk of each batch; nothing may panic, hang or
//! allocate past the bounds. Inputs whose CRC is wrong are re-checksummed half the time so
//! the fuzzer reaches the record layer.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rill_storage::batch;
use rill_storage::records::{ReaderBuffers, RecordReader};

const MAX_DECOMPRESSED_BYTES: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if bytes.first().is_some_and(|b| b & 1 == 1) && bytes.len() >= batch::HEADER_SIZE {
        let crc = crc32c_of(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    if batch::validate_all(&bytes, 1 << 20).is_ok() {
        let _ = batch::validate_records_all(&bytes, MAX_DECOMPRESSED_BYTES);
    }
    // The record walker on its own, for any header.
    if let Ok(mut reader) =
        RecordReader::for_batch(&bytes, MAX_DECOMPRESSED_BYTES, ReaderBuffers::default())
    {
        // Bounded: every record consumes at least one decompressed byte.
        while let Ok(Some(record)) = reader.next_record() {
            let _ = record.headers.iter().count();
        }
    }
});

/// CRC-32C (Castagnoli), bitwise: slow but dependency-free, and inputs are small.
fn crc32c_of(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
