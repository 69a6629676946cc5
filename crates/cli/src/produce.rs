//! `rill produce`: one record per input line, from stdin or a file.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rill_client::{Compression, Producer, ProducerConfig};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::common::{usage, ConnectArgs};
use crate::topic::parse_pairs;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic to write to (must exist; see `rill topic create`).
    pub topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Split each line at the first SEP into key and value; lines without SEP have no key.
    /// Without this option the whole line is the value.
    #[arg(long, short = 'K', value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Header `name=value` added to every record (repeatable).
    #[arg(long, short = 'H', value_name = "NAME=VALUE")]
    pub header: Vec<String>,
    /// Deliver every record this long after the broker stores it (header `rill-delay-ms`;
    /// the topic needs `rill.delivery.delayed.enable=true`): `500ms`, `30s`, `5m`, `2h`, `7d`,
    /// or a number of milliseconds.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms, conflicts_with = "deliver_at")]
    pub delay: Option<u64>,
    /// Deliver every record at this time, epoch milliseconds (header `rill-deliver-at`; a past
    /// time delivers at once).
    #[arg(long, value_name = "EPOCH_MS")]
    pub deliver_at: Option<i64>,
    /// Write every record to this partition. Default: records with a key go to
    /// murmur2(key) mod partitions (as the Java client), records without one round-robin.
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Acknowledgements: 0, 1, or all (-1).
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: i16,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    pub compression: Compression,
    /// Send a partition's batch once it holds this many bytes.
    #[arg(long, default_value_t = 65_536)]
    pub batch_size: usize,
    /// Wait at most this long for a batch to fill.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Parses `--acks`: 0, 1, -1 or all.
///
/// # Errors
/// Anything else.
pub fn parse_acks(s: &str) -> Result<i16, String> {
    match s {
        "0" => Ok(0),
        "1" => Ok(1),
        "-1" | "all" => Ok(-1),
        _ => Err(format!("'{s}' is not 0, 1, all or -1")),
    }
}

/// Parses `--delay`: a whole number with an optional unit `ms` (default), `s`, `m`, `h`, `d`.
///
/// # Errors
/// Anything else, or a delay that overflows.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a duration such as 500ms, 30s, 5m, 2h or 7d"))?;
    let scale: u64 = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (ms, s, m, h, d)")),
    };
    n.checked_mul(scale)
        .filter(|&ms| ms <= i64::MAX as u64)
        .ok_or_else(|| format!("'{s}' is too long"))
}

/// Runs `rill produce`.
///
/// # Errors
/// Unreadable input, unreachable broker, missing topic, failed batches.
pub async fn run(a: ProduceArgs) -> anyhow::Result<()> {
    let mut headers = parse_pairs(&a.header, "--header")?;
    if let Some(ms) = a.delay {
        headers.push(("rill-delay-ms".to_string(), ms.to_string()));
    }
    if let Some(at) = a.deliver_at {
        headers.push(("rill-deliver-at".to_string(), at.to_string()));
    }
    if a.key_separator.as_deref() == Some("") {
        return Err(usage("--key-separator must not be empty"));
    }
    let input: Box<dyn AsyncRead + Unpin + Send> = match &a.file {
        Some(path) => Box::new(
            tokio::fs::File::open(path)
                .await
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        None => Box::new(tokio::io::stdin()),
    };
    let client = a.connect.connect().await?;
    let topic = client.topic(&a.topic).await?;
    let partitions = topic.partitions.len();
    if let Some(p) = a.partition {
        if p < 0 || p as usize >= partitions {
            return Err(usage(format!(
                "--partition {p}: topic '{}' has partitions 0..{}",
                a.topic,
                partitions.saturating_sub(1)
            )));
        }
    }
    let config = ProducerConfig {
        acks: a.acks,
        compression: a.compression,
        batch_size_bytes: a.batch_size.max(1),
        linger: Duration::from_millis(a.linger_ms),
        max_in_flight: 5,
        request_timeout: client.timeout(),
    };
    let mut producer = Producer::new(&client, &topic, config).await?;
    let header_refs: Vec<(&str, Option<&[u8]>)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), Some(v.as_bytes())))
        .collect();
    let mut lines = BufReader::with_capacity(256 * 1024, input).lines();
    let mut sent: u64 = 0;
    let mut round_robin = 0usize;
    let mut failures = Failures::default();
    loop {
        let line = match producer.linger_deadline() {
            Some(deadline) => tokio::select! {
                line = lines.next_line() => line,
                () = tokio::time::sleep_until(deadline.into()) => {
                    producer.poll()?;
                    failures.take(&mut producer);
                    continue;
                }
            },
            None => lines.next_line().await,
        };
        let Some(line) = line.context("reading input")? else {
            break;
        };
        let (key, value) = match a
            .key_separator
            .as_deref()
            .and_then(|sep| line.split_once(sep))
        {
            Some((k, v)) => (Some(k.as_bytes()), v.as_bytes()),
            None => (None, line.as_bytes()),
        };
        let index = match (a.partition, key) {
            (Some(p), _) => p as usize,
            (None, Some(k)) => partition_for_key(k, partitions),
            (None, None) => {
                round_robin = (round_robin + 1) % partitions;
                round_robin
            }
        };
        producer
            .send(index, now_ms(), key, Some(value), &header_refs, sent)
            .await?;
        sent += 1;
        failures.take(&mut producer);
    }
    producer.flush().await?;
    failures.take(&mut producer);
    if let Some(first) = failures.first {
        anyhow::bail!(
            "{} of {sent} records were not written to topic '{}'; first error: {first}",
            failures.records,
            a.topic
        );
    }
    eprintln!("produced {sent} records to topic {}", a.topic);
    Ok(())
}

/// Failed batches seen so far.
#[derive(Default)]
struct Failures {
    records: u64,
    first: Option<String>,
}

impl Failures {
    fn take(&mut self, producer: &mut Producer) {
        for ack in producer.take_acks() {
            if let Some(e) = ack.error {
                self.records += ack.tags.len() as u64;
                self.first
                    .get_or_insert(format!("partition {}: {e}", ack.partition));
            }
        }
    }
}

/// Wall-clock milliseconds, as Kafka timestamps are.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The Java client's default partitioner for keyed records: murmur2, positive, modulo.
pub fn partition_for_key(key: &[u8], partitions: usize) -> usize {
    let positive = murmur2(key) & 0x7fff_ffff;
    positive as usize % partitions.max(1)
}

/// Kafka's `Utils.murmur2` (seed 0x9747b28c).
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len() as u32;
    let mut h: u32 = 0x9747_b28c ^ length;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985_981_536);
        assert_eq!(
            murmur2(b"a-little-bit-longer-string") as i32,
            -1_486_304_829
        );
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58_897_971
        );
        assert_eq!(murmur2(b"abc") as i32, 479_470_107);
    }

    #[test]
    fn acks_parse() {
        assert_eq!(parse_acks("all"), Ok(-1));
        assert_eq!(parse_acks("1"), Ok(1));
        assert!(parse_acks("2").is_err());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration_ms("250"), Ok(250));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("365d"), Ok(31_536_000_000));
        for bad in ["", "s", "1.5s", "-1s", "10y", "99999999999999999999d"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }
}
