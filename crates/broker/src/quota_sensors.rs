//! Enforcement of the byte-rate client quotas (`producer_byte_rate`, `consumer_byte_rate`) as
//! Kafka enforces them (KIP-13, KIP-219): each request's bytes are recorded in a windowed rate
//! kept per quota entity (the user/client-id pair the matched quota names, so clients under
//! one default quota each get their own rate, as Kafka's metric tags do), and a request that
//! takes the rate over the quota is answered at once with `throttle_time_ms` = the time the
//! rate needs to fall back to the quota; the connection then is muted (nothing more is read
//! from it) for that long after the response is sent (`listener.rs`).
//!
//! The rate is Kafka's `Rate` over `SampledStat`: [`SAMPLES`] samples of [`SAMPLE_WINDOW_MS`]
//! (Kafka's `quota.window.num` = 11, `quota.window.size.seconds` = 1), the sum of the live
//! samples divided by the time since the oldest one started, counted as at least
//! `(SAMPLES - 1)` windows so that a first burst is averaged over 10 s, not over its own
//! duration. Throttle time is Kafka's `QuotaUtils.throttleTime`:
//! `(rate - quota) / quota * window`.
//!
//! Bounded: a fixed array of samples per rate, and at most [`RATES_MAX`] rates; when full, rates
//! that have been idle for the whole window (whose value is zero anyway) are dropped first, then
//! the least recently used one.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::client_quotas::{ClientQuotas, Entity, CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE};

/// The user every connection is until authentication exists: Kafka's principal name for an
/// unauthenticated client, which `user` quota entities (and the `<default>` user) match.
pub const ANONYMOUS_USER: &str = "ANONYMOUS";

/// Samples per rate (Kafka's `quota.window.num` default).
pub const SAMPLES: usize = 11;

/// Span of one sample (Kafka's `quota.window.size.seconds` default).
pub const SAMPLE_WINDOW_MS: u64 = 1_000;

/// Most rates kept at once (entities seen recently with a quota that applies to them).
pub const RATES_MAX: usize = 10_000;

/// Longest throttle, so a single huge request cannot mute its connection for days; Kafka's is
/// bounded only by its int. An hour is past any client's patience.
pub const THROTTLE_MS_MAX: u64 = 3_600_000;

/// Which byte rate a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// `producer_byte_rate`: Produce request bytes.
    Produce,
    /// `consumer_byte_rate`: Fetch response bytes.
    Fetch,
}

impl QuotaKind {
    fn key(self) -> &'static str {
        match self {
            QuotaKind::Produce => PRODUCER_BYTE_RATE,
            QuotaKind::Fetch => CONSUMER_BYTE_RATE,
        }
    }
}

/// One sample: when it started and what was recorded in it.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    start_ms: u64,
    value: f64,
}

/// A windowed rate (Kafka's `Rate` with `SampledStat`), in units per second.
#[derive(Debug, Clone)]
struct Rate {
    samples: [Sample; SAMPLES],
    current: usize,
    last_record_ms: u64,
}

impl Rate {
    fn new(now_ms: u64) -> Rate {
        let mut samples = [Sample::default(); SAMPLES];
        samples[0].start_ms = now_ms;
        Rate {
            samples,
            current: 0,
            last_record_ms: now_ms,
        }
    }

    fn record(&mut self, now_ms: u64, value: f64) {
        if now_ms >= self.samples[self.current].start_ms + SAMPLE_WINDOW_MS {
            self.current = (self.current + 1) % SAMPLES;
            self.samples[self.current] = Sample {
                start_ms: now_ms,
                value: 0.0,
            };
        }
        self.samples[self.current].value += value;
        self.last_record_ms = now_ms;
    }

    /// The rate per second and the window it is measured over, in ms.
    fn measure(&self, now_ms: u64) -> (f64, u64) {
        let span_ms = SAMPLES as u64 * SAMPLE_WINDOW_MS;
        let live = self
            .samples
            .iter()
            .filter(|s| now_ms.saturating_sub(s.start_ms) < span_ms && s.value != 0.0);
        let (sum, oldest_ms) = live.fold((0.0, now_ms), |(sum, oldest), s| {
            (sum + s.value, oldest.min(s.start_ms))
        });
        let window_ms = (now_ms - oldest_ms).max((SAMPLES as u64 - 1) * SAMPLE_WINDOW_MS);
        debug_assert!(window_ms > 0);
        (sum * 1000.0 / window_ms as f64, window_ms)
    }
}

/// How long a request must be throttled for its rate to be back at `quota`.
fn throttle_ms(rate: f64, quota: f64, window_ms: u64) -> u64 {
    if rate <= quota || quota <= 0.0 {
        return 0;
    }
    let ms = ((rate - quota) / quota * window_ms as f64).round();
    (ms as u64).min(THROTTLE_MS_MAX)
}

/// The rates of all entities that have a byte-rate quota, shared by all connections.
#[derive(Default)]
pub struct QuotaSensors {
    rates: Mutex<HashMap<(QuotaKind, Entity), Rate>>,
}

impl QuotaSensors {
    /// Records `bytes` for `user` with `client_id` against the `kind` quota that applies to
    /// them, if one does.
    ///
    /// # Returns
    /// The throttle time in ms (0: within the quota, or no quota).
    pub fn record(
        &self,
        quotas: &ClientQuotas,
        kind: QuotaKind,
        user: &str,
        client_id: &str,
        bytes: u64,
        now_ms: u64,
    ) -> u64 {
        if quotas.is_empty() {
            return 0;
        }
        let Some((quota, entity)) = quotas.limit(user, client_id, kind.key()) else {
            return 0;
        };
        let mut rates = self.rates.lock();
        let key = (kind, entity);
        if !rates.contains_key(&key) && rates.len() >= RATES_MAX {
            make_room(&mut rates, now_ms);
        }
        let rate = rates.entry(key).or_insert_with(|| Rate::new(now_ms));
        rate.record(now_ms, bytes as f64);
        let (value, window_ms) = rate.measure(now_ms);
        throttle_ms(value, quota, window_ms)
    }

    /// Takes `bytes` back off the rate [`QuotaSensors::record`] counted them in (a throttled
    /// fetch, whose records were not sent: Kafka's `unrecordQuotaSensor`).
    pub fn unrecord(
        &self,
        quotas: &ClientQuotas,
        kind: QuotaKind,
        user: &str,
        client_id: &str,
        bytes: u64,
        now_ms: u64,
    ) {
        let Some((_, entity)) = quotas.limit(user, client_id, kind.key()) else {
            return;
        };
        if let Some(rate) = self.rates.lock().get_mut(&(kind, entity)) {
            rate.record(now_ms, -(bytes as f64));
        }
    }

    /// How many rates are kept (for tests and metrics).
    pub fn len(&self) -> usize {
        self.rates.lock().len()
    }

    /// Whether no rate is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops the rates idle for a whole window (zero anyway), or else the least recently used.
fn make_room(rates: &mut HashMap<(QuotaKind, Entity), Rate>, now_ms: u64) {
    let span_ms = SAMPLES as u64 * SAMPLE_WINDOW_MS;
    rates.retain(|_, r| now_ms.saturating_sub(r.last_record_ms) < span_ms);
    if rates.len() >= RATES_MAX {
        let oldest = rates
            .iter()
            .min_by_key(|(_, r)| r.last_record_ms)
            .map(|(k, _)| k.clone());
        if let Some(key) = oldest {
            rates.remove(&key);
        }
    }
    debug_assert!(rates.len() < RATES_MAX);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_quotas::Alteration;
    use std::collections::HashSet;

    #[test]
    fn a_first_burst_is_averaged_over_ten_windows() {
        let mut r = Rate::new(0);
        r.record(0, 10_000.0);
        let (rate, window_ms) = r.measure(0);
        assert_eq!(window_ms, 10_000);
        assert!((rate - 1_000.0).abs() < 1e-9);
        // 10 000 bytes against 100 B/s: 100 s of quota, 10 of them already counted.
        assert_eq!(throttle_ms(rate, 100.0, window_ms), 90_000);
        assert_eq!(throttle_ms(rate, 1_000.0, window_ms), 0);
    }

    #[test]
    fn old_samples_expire_and_the_window_follows_the_oldest() {
        let mut r = Rate::new(0);
        for second in 0..30u64 {
            r.record(second * 1000, 500.0);
        }
        // 11 live samples of 500 over the 10+ s since the oldest started.
        let (rate, window_ms) = r.measure(29_500);
        assert_eq!(window_ms, 10_500);
        assert!((rate - 5_500.0 * 1000.0 / 10_500.0).abs() < 1e-6, "{rate}");
        let (rate, _) = r.measure(29_000 + 11_000);
        assert_eq!(rate, 0.0, "all samples expired");
    }

    #[test]
    fn records_only_where_a_quota_applies_and_bounds_the_rates() {
        let dir = tempfile::tempdir().expect("dir");
        let quotas = ClientQuotas::load(dir.path()).expect("load");
        let sensors = QuotaSensors::default();
        assert_eq!(
            sensors.record(&quotas, QuotaKind::Produce, "u", "c", 1 << 20, 0),
            0
        );
        assert!(sensors.is_empty(), "no quota: nothing kept");
        let set = Alteration {
            entity: vec![("client-id".into(), None)],
            ops: vec![(PRODUCER_BYTE_RATE.into(), Some(1000.0))],
        };
        let r = quotas.alter(&[set], false, &HashSet::new());
        assert!(r[0].1.is_ok());
        assert_eq!(
            sensors.record(&quotas, QuotaKind::Fetch, "u", "c", 1 << 20, 0),
            0
        );
        assert!(sensors.is_empty(), "no fetch quota");
        assert_eq!(
            sensors.record(&quotas, QuotaKind::Produce, "u", "c", 5_000, 0),
            0
        );
        // 15 000 B in a 10 s window against 1000 B/s: 5 s to wait.
        assert_eq!(
            sensors.record(&quotas, QuotaKind::Produce, "u", "c", 10_000, 0),
            5_000
        );
        // Another client under the same default quota has its own rate.
        assert_eq!(
            sensors.record(&quotas, QuotaKind::Produce, "u", "d", 5_000, 0),
            0
        );
        for i in 0..(RATES_MAX + 10) {
            sensors.record(
                &quotas,
                QuotaKind::Produce,
                "u",
                &format!("c{i}"),
                1,
                i as u64,
            );
        }
        assert!(sensors.len() <= RATES_MAX);
    }
}
