//! Delayed delivery (`rill.delivery.delayed.enable`): records produced with a
//! `rill-deliver-at` or `rill-delay-ms` header are stored at once and appended to their
//! partition when due.
//!
//! Each partition of a delay-enabled topic has a **delay log**, an internal partition log
//! `__rill_delayed.<topic>-<partition>` (never in the topic registry, Metadata or Fetch)
//! holding the produced batches as sent (LogAppendTime: the append time is the base of
//! `rill-delay-ms`). Every batch produced to such a partition goes there, delayed or not, so an
//! idempotent producer's sequences stay in one log and records without a delay keep their
//! order; the acknowledgement waits for the delay log's durability as any append does.
//! `store.rs` holds a store (delay log, index, deliveries), `index.rs` the bounded in-memory
//! window by due time, `cursor.rs` what was delivered, `headers.rs` the header rules. One
//! deliverer task per store (`deliverer`) pages in keys, waits for the earliest due time and
//! appends due records to the target partition as batches of a reserved idempotent producer.

pub mod cancels;
pub mod cursor;
pub mod headers;
pub mod index;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rill_storage::{Log, LogConfig, StorageError, TimestampType, TopicPartition, Visibility};
use tokio::task::JoinHandle;

use crate::broker::now_ms;
use crate::state::BrokerState;
use index::DelayIndex;
use store::DelayStore;

/// Delay logs are partitions of topics named with this prefix (not a valid place for client
/// topics: produce to it is refused, and the registry never adopts it).
pub const LOG_PREFIX: &str = "__rill_delayed.";

/// The delay log partition of a target partition.
pub fn delay_log_of(target: &TopicPartition) -> TopicPartition {
    TopicPartition::new(format!("{LOG_PREFIX}{}", target.topic), target.partition)
}

/// Whether `topic` names delay logs.
pub fn is_delay_log(topic: &str) -> bool {
    topic.starts_with(LOG_PREFIX)
}

/// The delay logs' config: the target's durability settings, LogAppendTime, no retention by
/// time or size (the deliverer moves the log start past delivered and cancelled records
/// instead, `reclaim`), visible when written (a scan must see every indexed key; deliveries
/// wait for the flushed offset themselves).
fn delay_log_config(target: &LogConfig) -> LogConfig {
    LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        visibility: Visibility::Written,
        retention_ms: -1,
        retention_bytes: -1,
        cleanup_policy: "delete".to_string(),
        delivery_delayed_enable: false,
        delivery_delay_ms: 0,
        ..target.clone()
    }
}

/// The broker's delay stores, one per delay-enabled partition that has seen a produce.
#[derive(Default)]
pub struct DelayStores {
    stores: Mutex<HashMap<TopicPartition, Arc<DelayStore>>>,
    /// Serializes opening (a store is opened once).
    opening: tokio::sync::Mutex<()>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

/// What /metrics and `rill topic describe` show of one store.
#[derive(Debug, Clone)]
pub struct StoreStats {
    pub target: TopicPartition,
    pub waiting: u64,
    pub in_memory: u64,
    pub next_due_ms: Option<i64>,
    pub last_lateness_ms: i64,
    /// Distinct ids with a pending cancel.
    pub cancels_pending: u64,
    /// Records not delivered because they were cancelled (since the store opened).
    pub cancelled_total: u64,
    /// The delay log's start offset and size (reclaimed as delivery passes it).
    pub log_start_offset: i64,
    pub log_size_bytes: u64,
}

impl DelayStores {
    pub fn stats(&self) -> Vec<StoreStats> {
        let stores: Vec<_> = self.stores.lock().values().cloned().collect();
        let mut out: Vec<_> = stores
            .iter()
            .map(|s| {
                let index = s.index.lock();
                StoreStats {
                    target: s.target.clone(),
                    waiting: index.waiting(),
                    in_memory: index.in_memory() as u64,
                    next_due_ms: index.next_due_ms(),
                    last_lateness_ms: s.last_lateness_ms.load(Ordering::Relaxed),
                    cancels_pending: index.cancels.len() as u64,
                    cancelled_total: index.cancels.skipped_total(),
                    log_start_offset: s.delay_log.log_start_offset(),
                    log_size_bytes: s.delay_log.size_bytes(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.target.cmp(&b.target));
        out
    }

    /// The store of `target`, opened (recovering its cursor and starting its deliverer) on
    /// first use.
    pub async fn get_or_open(
        state: &Arc<BrokerState>,
        target: &TopicPartition,
    ) -> Result<Arc<DelayStore>, StorageError> {
        let stores = &state.delayed;
        if let Some(s) = stores.stores.lock().get(target) {
            return Ok(Arc::clone(s));
        }
        let _opening = stores.opening.lock().await;
        if let Some(s) = stores.stores.lock().get(target) {
            return Ok(Arc::clone(s));
        }
        let (st, tp) = (Arc::clone(state), target.clone());
        let store = tokio::task::spawn_blocking(move || open(&st, &tp))
            .await
            .map_err(|e| StorageError::InvalidRecord {
                reason: format!("opening the delay store failed: {e}"),
            })??;
        let store = Arc::new(store);
        if stores.closed.load(Ordering::Acquire) {
            store.closed.store(true, Ordering::Release);
        }
        stores
            .stores
            .lock()
            .insert(target.clone(), Arc::clone(&store));
        let task = tokio::spawn(deliverer(Arc::clone(state), Arc::clone(&store)));
        stores.tasks.lock().push(task);
        Ok(store)
    }

    /// Opens the store of every delay log on disk (at start-up: their records wait).
    pub async fn open_existing(state: &Arc<BrokerState>) {
        let targets: Vec<TopicPartition> = state
            .logs
            .partitions()
            .into_iter()
            .filter(|tp| is_delay_log(&tp.topic))
            .map(|tp| TopicPartition::new(&tp.topic[LOG_PREFIX.len()..], tp.partition))
            .collect();
        for target in targets {
            if !state.partition_exists(&target.topic, target.partition) {
                tracing::warn!(%target, "delay log without its topic; left alone");
                continue;
            }
            if let Err(e) = Self::get_or_open(state, &target).await {
                tracing::error!(%target, error = %e, "cannot open delay store");
            }
        }
    }

    /// Stops every deliverer and waits for them (before storage closes).
    pub async fn close(&self, state: &BrokerState) {
        self.closed.store(true, Ordering::Release);
        for store in self.stores.lock().values() {
            store.closed.store(true, Ordering::Release);
            store.wake.notify_one();
        }
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock());
        for task in tasks {
            if let Err(e) = task.await {
                state.metrics.task_failed("delayed deliverer", &e);
            }
        }
    }

    /// Forgets the stores of a deleted topic, stopping their deliverers (their logs are
    /// deleted with the topic).
    pub fn forget_topic(&self, topic: &str) {
        self.stores.lock().retain(|tp, store| {
            let keep = tp.topic != topic;
            if !keep {
                store.closed.store(true, Ordering::Release);
                store.wake.notify_one();
            }
            keep
        });
    }
}

/// Opens (or creates) the delay log of `target` and recovers its cursor. Blocking.
fn open(state: &BrokerState, target: &TopicPartition) -> Result<DelayStore, StorageError> {
    let target_log = state
        .logs
        .get_log(target)?
        .ok_or_else(|| StorageError::UnknownPartition { tp: target.clone() })?;
    let delay_tp = delay_log_of(target);
    let config = delay_log_config(&target_log.config());
    let delay_log = match state.logs.get_log(&delay_tp)? {
        Some(log) => {
            log.set_config(config);
            log
        }
        None => state.logs.create_log(&delay_tp, config)?,
    };
    let max_decompressed_bytes = state.config.decompressed_batch_max_bytes;
    let cursor_path = state
        .logs
        .data_dir()
        .join("rill-delayed-cursors")
        .join(target.dir_name());
    let recovered = cursor::recover(
        cursor::read_file(&cursor_path),
        cursor::from_target(&target_log, max_decompressed_bytes),
    );
    tracing::info!(%target, cursor = ?recovered, "delay store opened");
    let index = DelayIndex::new(
        state.config.delivery_delay_memory_entries.max(1),
        recovered.map(|c| c.key),
        delay_log.log_start_offset(),
        state.config.delivery_cancel_max_pending.max(1),
    );
    Ok(DelayStore {
        target: target.clone(),
        delay_log,
        index: Mutex::new(index),
        wake: tokio::sync::Notify::new(),
        closed: AtomicBool::new(false),
        next_sequence: Mutex::new(recovered.map_or(0, |c| c.next_sequence)),
        last_lateness_ms: AtomicI64::new(0),
        cursor_path,
        max_decompressed_bytes,
    })
}

/// Keys taken per delivery round.
const ROUND_KEYS: usize = 10 * store::DELIVERY_BATCH_RECORDS;
/// Longest sleep between checks when nothing is due (new keys wake the task sooner).
const IDLE_WAIT: Duration = Duration::from_millis(1000);
/// Wait for the delay log's flusher when due keys are not durable yet.
const FLUSH_WAIT: Duration = Duration::from_millis(2);
/// Back-off after a failed scan or delivery.
const ERROR_WAIT: Duration = Duration::from_millis(500);
/// How often the cursor file is rewritten at most.
const CURSOR_FILE_EVERY: Duration = Duration::from_secs(1);

/// One store's deliverer: pages keys in, delivers due ones, writes the cursor file. Runs
/// until the store closes (broker shutdown or topic deletion).
async fn deliverer(state: Arc<BrokerState>, store: Arc<DelayStore>) {
    let capacity = state.config.delivery_delay_memory_entries.max(1);
    let mut unsynced: Option<Delivered> = None;
    let mut cursor_written = Instant::now();
    while !store.closed.load(Ordering::Acquire) {
        if store.index.lock().needs_page_in() {
            let s = Arc::clone(&store);
            match tokio::task::spawn_blocking(move || s.scan(capacity)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(target = %store.target, error = %e, "delay log scan failed");
                    tokio::time::sleep(ERROR_WAIT).await;
                    continue;
                }
                Err(e) => {
                    state.metrics.task_failed("delay log scan", &e);
                    tokio::time::sleep(ERROR_WAIT).await;
                    continue;
                }
            }
        }
        let now = now_ms();
        let keys = take_durable_due(&store, now);
        if keys.is_empty() {
            let wait = match store.index.lock().next_due_ms() {
                Some(due) if due <= now => FLUSH_WAIT,
                Some(due) => Duration::from_millis((due - now) as u64).min(IDLE_WAIT),
                None => IDLE_WAIT,
            };
            let _ = tokio::time::timeout(wait, store.wake.notified()).await;
        } else if let Some(c) = deliver_round(&state, &store, keys, now).await {
            unsynced = Some(c);
        }
        if let Some(d) = unsynced {
            if cursor_written.elapsed() >= CURSOR_FILE_EVERY {
                let durable = state
                    .logs
                    .get_log(&store.target)
                    .ok()
                    .flatten()
                    .is_some_and(|t| t.flushed_offset() >= d.target_end);
                if durable {
                    let s = Arc::clone(&store);
                    match tokio::task::spawn_blocking(move || s.persist_delivered(&d)).await {
                        Ok(Ok(())) => unsynced = None,
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "delivery round not persisted")
                        }
                        Err(e) => state.metrics.task_failed("delivery cursor file", &e),
                    }
                    cursor_written = Instant::now();
                }
            }
        }
    }
}

/// What a delivery round did, kept until the target has it durably.
#[derive(Debug, Clone, Copy)]
pub struct Delivered {
    /// The target's end offset after the round.
    pub target_end: i64,
    pub cursor: cursor::Cursor,
    /// Every delay log record below this offset was delivered or cancelled by then.
    pub reclaimable_below: i64,
}

/// Takes the due keys whose records are durable in the delay log (a delivery must never
/// outlive the record it delivers), leaving the rest in the index.
fn take_durable_due(store: &DelayStore, now: i64) -> Vec<index::Key> {
    let flushed = store.delay_log.flushed_offset();
    let mut index = store.index.lock();
    let mut keys = index.take_due(now, ROUND_KEYS);
    if let Some(p) = keys.iter().position(|k| k.offset >= flushed) {
        let rest = keys.split_off(p);
        index.restore(&rest);
    }
    keys
}

/// Delivers one round of keys; returns what it did.
async fn deliver_round(
    state: &Arc<BrokerState>,
    store: &Arc<DelayStore>,
    keys: Vec<index::Key>,
    now: i64,
) -> Option<Delivered> {
    let target: Arc<Log> = match state.log(&store.target) {
        Ok(log) => log,
        Err(code) => {
            tracing::warn!(target = %store.target, code, "delay target unavailable");
            store.index.lock().restore(&keys);
            tokio::time::sleep(ERROR_WAIT).await;
            return None;
        }
    };
    let (s, t, k) = (Arc::clone(store), Arc::clone(&target), keys);
    let joined = tokio::task::spawn_blocking(move || {
        let (done, err) = s.deliver(&t, &k, now);
        (k, done, err)
    })
    .await;
    let (keys, done, err) = match joined {
        Ok(r) => r,
        Err(e) => {
            // The keys are lost from memory, not from the log: page everything in again.
            state.metrics.task_failed("delayed delivery", &e);
            store.index.lock().forget_memory();
            return None;
        }
    };
    let reclaimable_below = {
        let mut index = store.index.lock();
        index.delivered(&keys[..done]);
        index.restore(&keys[done..]);
        // Under the lock: no append (and so no new key) comes between the two reads.
        index
            .lowest_waiting()
            .unwrap_or_else(|| store.delay_log.log_end_offset())
    };
    if let Some(e) = err {
        tracing::warn!(target = %store.target, error = %e, "delayed delivery failed; retrying");
        tokio::time::sleep(ERROR_WAIT).await;
    }
    if done == 0 {
        return None;
    }
    let end = target.log_end_offset();
    target.on_durable(end, Box::new(|_| {}));
    if target.high_watermark() >= end {
        state.notify_appended(&store.target);
    }
    state
        .metrics
        .record_produce(&store.target.topic, 0, done as u64);
    let key = keys[done - 1];
    let next_sequence = *store.next_sequence.lock();
    Some(Delivered {
        target_end: end,
        cursor: cursor::Cursor { key, next_sequence },
        reclaimable_below,
    })
}
