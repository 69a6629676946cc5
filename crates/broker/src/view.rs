//! Filtered views: a topic whose records are the records of a source topic that match a
//! filter (RocketMQ's broker-side filtering, for unmodified Kafka consumers).
//!
//! A view is an ordinary topic with three configs: `rill.view.source` (the source topic),
//! `rill.view.filter` (the expression, see [`crate::filter`]) and `rill.view.filter.type`
//! (`SQL92`, the default, or `TAG`). Any client consumes it like a topic; producing to it is
//! refused. Source partition *p* feeds view partition *p*, so per-key order is the source's;
//! a view gains partitions when its source does.
//!
//! The view maintainer copies matching records once, as the source is appended: committed
//! records only (up to the source's last stable offset, aborted transactions and markers
//! skipped), each with a `rill-source-offset` header (decimal text) and the source record's
//! key, value, headers and timestamp. Topics that are not sources never pay for it: the
//! produce path is untouched, and the maintainer reads the source's files after the fact.
//!
//! **No gaps, no duplicates across restarts, without a separate cursor:** the view's own log
//! is the cursor. The next source offset to scan is one past the `rill-source-offset` of the
//! view's last record, so a view record and "this source offset was copied" are one append,
//! atomic and durable together. A crash that loses the view's unflushed tail also loses the
//! cursor's advance past it, and the copy resumes there. Source records after the last
//! matching one are scanned again after a restart; they do not match, so nothing is copied
//! twice. Records the source deleted (retention) before they were scanned are skipped.
//!
//! Changing a view's filter applies from the current cursor on; changing its source is
//! refused.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use rill_storage::batch::{BatchHeader, HEADER_SIZE};
use rill_storage::compression::Compression;
use rill_storage::records::{
    put_varint, BatchBuilder, BatchSpec, Headers, NewRecord, ReaderBuffers, RecordReader,
};
use rill_storage::{Isolation, Log, StorageError, TopicPartition};

use crate::filter::{Filter, FilterError, FilterType, RecordFields};
use crate::state::BrokerState;
use crate::topics::TopicMeta;

/// The source topic of a view.
pub const SOURCE_KEY: &str = "rill.view.source";
/// The filter expression of a view.
pub const FILTER_KEY: &str = "rill.view.filter";
/// `SQL92` (default) or `TAG`.
pub const FILTER_TYPE_KEY: &str = "rill.view.filter.type";
/// The header each view record carries: its offset in the source partition.
pub const SOURCE_OFFSET_HEADER: &str = "rill-source-offset";

/// A file in each view partition's directory naming the source topic's id the view was
/// built from: a source deleted and re-created under the same name has a new id, and its
/// offsets start over, so the view must not resume at the old source offset.
const SOURCE_ID_FILE: &str = "rill-view-source-id";

/// Source bytes read per partition per pass: bounds the memory and the time of one pass.
const READ_BYTES_PER_PASS: u32 = 1024 * 1024;
/// Record bytes per view batch: well below the default `max.message.bytes` (1 MiB), since one
/// pass may decompress more than it read.
const VIEW_BATCH_BYTES: usize = 256 * 1024;
/// Decompressed bytes one source batch may inflate to (the produce path's bound).
const MAX_DECOMPRESSED_BYTES: u64 = 64 * 1024 * 1024;

/// Whether a topic config key belongs to views (checked by [`spec`], not by storage).
pub fn is_view_key(key: &str) -> bool {
    key.starts_with("rill.view.")
}

/// What makes a topic a view.
#[derive(Debug, Clone)]
pub struct ViewSpec {
    pub source: String,
    pub filter: Filter,
}

/// Why a view's configs were refused.
#[derive(Debug, thiserror::Error)]
pub enum ViewConfigError {
    #[error("unknown view config {key}")]
    UnknownKey { key: String },
    #[error("a view needs both {SOURCE_KEY} and {FILTER_KEY}")]
    Incomplete,
    #[error("{FILTER_TYPE_KEY} must be SQL92 or TAG, not {value:?}")]
    FilterType { value: String },
    #[error("invalid {FILTER_KEY}: {0}")]
    Filter(#[from] FilterError),
    #[error("the source of view {view} cannot be {topic:?}: {reason}")]
    Source {
        view: String,
        topic: String,
        reason: &'static str,
    },
}

impl ViewConfigError {
    /// The config key the error is about.
    pub fn key(&self) -> &str {
        match self {
            ViewConfigError::UnknownKey { key } => key,
            ViewConfigError::Incomplete | ViewConfigError::Source { .. } => SOURCE_KEY,
            ViewConfigError::FilterType { .. } => FILTER_TYPE_KEY,
            ViewConfigError::Filter(_) => FILTER_KEY,
        }
    }
}

/// The view a topic's configs describe, if any.
pub fn spec(configs: &BTreeMap<String, String>) -> Result<Option<ViewSpec>, ViewConfigError> {
    let mut source = None;
    let mut filter = None;
    let mut kind = FilterType::Sql92;
    for (key, value) in configs.iter().filter(|(k, _)| is_view_key(k)) {
        match key.as_str() {
            SOURCE_KEY => source = Some(value.clone()),
            FILTER_KEY => filter = Some(value.as_str()),
            FILTER_TYPE_KEY => {
                kind = FilterType::parse(value).ok_or_else(|| ViewConfigError::FilterType {
                    value: value.clone(),
                })?
            }
            _ => return Err(ViewConfigError::UnknownKey { key: key.clone() }),
        }
    }
    match (source, filter) {
        (None, None) if !configs.contains_key(FILTER_TYPE_KEY) => Ok(None),
        (Some(source), Some(filter)) => Ok(Some(ViewSpec {
            source,
            filter: Filter::parse(kind, filter)?,
        })),
        _ => Err(ViewConfigError::Incomplete),
    }
}

/// Checks a view's configs against the topics there are: the source exists, is not the view
/// itself, and (on a change) is the one the view had.
pub fn validate(
    view: &str,
    configs: &BTreeMap<String, String>,
    previous: Option<&TopicMeta>,
    source_meta: impl Fn(&str) -> Option<Arc<TopicMeta>>,
) -> Result<(), ViewConfigError> {
    let Some(spec) = spec(configs)? else {
        if previous.is_some_and(|p| p.configs.contains_key(SOURCE_KEY)) {
            return Err(ViewConfigError::Source {
                view: view.to_string(),
                topic: String::new(),
                reason: "a view stays a view (delete it instead)",
            });
        }
        return Ok(());
    };
    let err = |reason| ViewConfigError::Source {
        view: view.to_string(),
        topic: spec.source.clone(),
        reason,
    };
    if let Some(previous) = previous {
        if previous.configs.get(SOURCE_KEY) != Some(&spec.source) {
            return Err(err("a view's source cannot change"));
        }
    }
    if spec.source == view {
        return Err(err("a view cannot be its own source"));
    }
    if crate::topics::is_internal(&spec.source) {
        return Err(err("internal topics cannot be sources"));
    }
    if source_meta(&spec.source).is_none() {
        return Err(err("no such topic"));
    }
    Ok(())
}

/// The view maintainer's memory: the next source offset to scan, per view partition, and
/// which views it already warned about.
#[derive(Default)]
pub struct ViewMaintainer {
    cursors: Mutex<HashMap<TopicPartition, Cursor>>,
    warned: Mutex<HashSet<String>>,
    /// Each topic's parsed view spec, for the `TopicMeta` it was parsed from (a config change
    /// makes a new `TopicMeta`), so a pass does not parse every filter again.
    specs: Mutex<HashMap<String, CachedSpec>>,
}

/// A topic's parsed view spec (or why its view configs are bad), with the `TopicMeta` it
/// was parsed from.
type CachedSpec = (Arc<TopicMeta>, Result<Option<ViewSpec>, String>);

/// Where a view partition's copy stands, valid for one pair of log instances (a deleted and
/// re-created topic starts over).
#[derive(Clone)]
struct Cursor {
    next: i64,
    view_log: std::sync::Weak<Log>,
    source_log: std::sync::Weak<Log>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassStats {
    pub scanned: u64,
    pub copied: u64,
    /// Source partitions whose scan moved forward (past records, or only past control and
    /// aborted batches, which scan no record): more may wait behind the pass's read bound.
    pub advanced: u64,
}

/// One view partition fed by the source partition being scanned.
struct Target {
    view_tp: TopicPartition,
    view_log: Arc<Log>,
    filter: Filter,
    next: i64,
    builder: Option<BatchBuilder>,
    base_timestamp: i64,
    offset_delta: i32,
    /// Record bytes in `builder`; past [`VIEW_BATCH_BYTES`] the batch is finished into `done`.
    pending_bytes: usize,
    /// Finished batches, appended together (all or nothing) at the end of the pass.
    done: Vec<u8>,
}

impl Target {
    fn finish_batch(&mut self) -> Result<(), StorageError> {
        if let Some(builder) = self.builder.take() {
            builder
                .finish(&mut self.done)
                .map_err(|e| corrupt(&format!("building the view batch: {e}")))?;
        }
        self.offset_delta = 0;
        self.pending_bytes = 0;
        Ok(())
    }
}

impl ViewMaintainer {
    /// Copies what is new in every view's source, a bounded amount per partition: each source
    /// partition is read and decoded once for all the views over it. Blocks (storage reads and
    /// appends): run it on the blocking pool.
    pub fn pass(&self, state: &BrokerState) -> PassStats {
        let mut by_source: HashMap<String, Vec<(Arc<TopicMeta>, ViewSpec)>> = HashMap::new();
        let all = state.topics.all();
        let topic_count = all.len();
        for meta in all {
            match self.cached_spec(&meta) {
                Ok(Some(spec)) => by_source
                    .entry(spec.source.clone())
                    .or_default()
                    .push((meta, spec)),
                Ok(None) => {}
                Err(e) => self.warn_once(&meta.name, &e),
            }
        }
        let mut stats = PassStats::default();
        let mut live = HashSet::new();
        for (source_name, views) in by_source {
            let Some(source) = state.topics.get(&source_name) else {
                for (meta, _) in &views {
                    self.warn_once(&meta.name, "its source topic does not exist");
                }
                continue;
            };
            let mut grown = Vec::with_capacity(views.len());
            for (meta, spec) in views {
                if source.partitions <= meta.partitions {
                    grown.push((meta, spec));
                    continue;
                }
                match state
                    .topics
                    .add_partitions(&state.logs, &meta.name, source.partitions, false)
                {
                    Ok(meta) => grown.push((meta, spec)),
                    Err(e) => self.warn_once(&meta.name, &e.to_string()),
                }
            }
            for partition in 0..source.partitions {
                let source_tp = TopicPartition::new(&source_name, partition);
                let views: Vec<(TopicPartition, &Filter)> = grown
                    .iter()
                    .filter(|(meta, _)| partition < meta.partitions)
                    .map(|(meta, spec)| (TopicPartition::new(&meta.name, partition), &spec.filter))
                    .collect();
                live.extend(views.iter().map(|(tp, _)| tp.clone()));
                match self.copy_partition(state, &source_tp, source.id, &views) {
                    Ok(s) => {
                        stats.scanned += s.scanned;
                        stats.copied += s.copied;
                        stats.advanced += s.advanced;
                    }
                    Err(e) => self.warn_once(&source_name, &e.to_string()),
                }
            }
        }
        self.cursors.lock().retain(|tp, _| live.contains(tp));
        let mut specs = self.specs.lock();
        if specs.len() > topic_count {
            let topics: HashSet<String> =
                state.topics.all().iter().map(|t| t.name.clone()).collect();
            specs.retain(|name, _| topics.contains(name));
        }
        drop(specs);
        stats
    }

    /// The view spec of `meta`, parsed once per `TopicMeta` (topics that are gone are
    /// forgotten when the cache holds more entries than there are topics).
    fn cached_spec(&self, meta: &Arc<TopicMeta>) -> Result<Option<ViewSpec>, String> {
        let mut specs = self.specs.lock();
        if let Some((cached, spec)) = specs.get(&meta.name) {
            if Arc::ptr_eq(cached, meta) {
                return spec.clone();
            }
        }
        let parsed = spec(&meta.configs).map_err(|e| e.to_string());
        specs.insert(meta.name.clone(), (Arc::clone(meta), parsed.clone()));
        parsed
    }

    /// Per view partition the maintainer has copied into: records of its source partition
    /// not yet scanned (the source's last stable offset minus the view's cursor).
    pub fn lags(&self) -> Vec<(TopicPartition, i64)> {
        self.cursors
            .lock()
            .iter()
            .filter_map(|(tp, c)| {
                let source = c.source_log.upgrade()?;
                Some((tp.clone(), (source.last_stable_offset() - c.next).max(0)))
            })
            .collect()
    }

    fn warn_once(&self, topic: &str, reason: &str) {
        /// Distinct warnings remembered; past it they start over (a storage error's text may
        /// name offsets, so the set must not grow with every pass).
        const MAX_WARNED: usize = 1024;
        let mut warned = self.warned.lock();
        if warned.len() >= MAX_WARNED {
            warned.clear();
        }
        if warned.insert(format!("{topic}: {reason}")) {
            tracing::warn!(topic, reason, "filtered view not maintained");
        }
    }

    /// One source partition into each of its views' partitions.
    fn copy_partition(
        &self,
        state: &BrokerState,
        source_tp: &TopicPartition,
        source_id: uuid::Uuid,
        views: &[(TopicPartition, &Filter)],
    ) -> Result<PassStats, StorageError> {
        let Some(source_log) = state.logs.get_log(source_tp)? else {
            return Ok(PassStats::default());
        };
        let mut targets = Vec::with_capacity(views.len());
        for (view_tp, filter) in views {
            let Some(view_log) = state.logs.get_log(view_tp)? else {
                continue;
            };
            let known = self.cursors.lock().get(view_tp).cloned().filter(|c| {
                c.view_log
                    .upgrade()
                    .is_some_and(|l| Arc::ptr_eq(&l, &view_log))
                    && c.source_log
                        .upgrade()
                        .is_some_and(|l| Arc::ptr_eq(&l, &source_log))
            });
            let next = match known {
                Some(c) => c.next,
                None => {
                    if let Err(reason) = check_source_id(&view_log, source_id) {
                        self.warn_once(&view_tp.topic, &reason);
                        continue;
                    }
                    resume_offset(&view_log)?
                }
            }
            .max(source_log.log_start_offset());
            targets.push(Target {
                view_tp: view_tp.clone(),
                view_log,
                filter: (*filter).clone(),
                next,
                builder: None,
                base_timestamp: 0,
                offset_delta: 0,
                pending_bytes: 0,
                done: Vec::new(),
            });
        }
        let Some(from) = targets.iter().map(|t| t.next).min() else {
            return Ok(PassStats::default());
        };
        let (mut stats, scanned_to) = scan(&source_log, from, &mut targets)?;
        stats.advanced = u64::from(scanned_to > from);
        for mut t in targets {
            t.finish_batch()?;
            if !t.done.is_empty() {
                t.view_log.append(&t.done)?;
                state.notify_appended(&t.view_tp);
            }
            self.cursors.lock().insert(
                t.view_tp,
                Cursor {
                    next: t.next.max(scanned_to),
                    view_log: Arc::downgrade(&t.view_log),
                    source_log: Arc::downgrade(&source_log),
                },
            );
        }
        Ok(stats)
    }
}

/// Checks that the view partition was built from the source topic with id `source_id`,
/// recording it on first use (a view made before the file existed adopts its source as it
/// is). A mismatch means the source was deleted and re-created: the view is not maintained
/// any further (its records came from a topic that no longer exists; it is to be deleted and
/// created again), rather than resuming at an offset of the old source.
fn check_source_id(view_log: &Log, source_id: uuid::Uuid) -> Result<(), String> {
    let path = view_log.dir().join(SOURCE_ID_FILE);
    let expected = source_id.to_string();
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim() == expected => Ok(()),
        Ok(text) => Err(format!(
            "its source was deleted and re-created (topic id {expected}; the view holds records of {}): the view is no longer maintained, delete and re-create it",
            text.trim()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::atomic_file::write(&path, expected.as_bytes())
                .map_err(|(op, e)| format!("{op} {}: {e}", path.display()))
        }
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// Where to resume from the view's own log: one past the source offset of its last record,
/// or 0 for an empty view.
fn resume_offset(view_log: &Log) -> Result<i64, StorageError> {
    let end = view_log.log_end_offset();
    if end <= view_log.log_start_offset() {
        return Ok(0);
    }
    // The batch holding the last offset; view batches are at most one pass's worth.
    let bytes = view_log.read_bytes(end - 1, READ_BYTES_PER_PASS)?;
    let mut last = None;
    let mut at = 0;
    // Bounded by the bytes read: each step moves past one batch.
    while let Some(h) = bytes.get(at..).and_then(BatchHeader::parse) {
        let size = h.total_size();
        if size < HEADER_SIZE || at + size > bytes.len() {
            break;
        }
        last = Some(&bytes[at..at + size]);
        at += size;
    }
    let Some(batch) = last else {
        return Ok(0);
    };
    let mut reader =
        RecordReader::for_batch(batch, MAX_DECOMPRESSED_BYTES, ReaderBuffers::default())
            .map_err(|e| corrupt(&e.to_string()))?;
    let mut source_offset = None;
    // Bounded by the batch's records.
    while let Some(r) = reader.next_record().map_err(|e| corrupt(&e.to_string()))? {
        for (k, v) in r.headers.iter() {
            if k == SOURCE_OFFSET_HEADER.as_bytes() {
                source_offset = v
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse::<i64>().ok());
            }
        }
    }
    Ok(source_offset.map_or(0, |o| o + 1))
}

fn corrupt(reason: &str) -> StorageError {
    StorageError::CorruptRecord {
        reason: format!("filtered view: {reason}"),
    }
}

/// Reads committed source records from `from`, a bounded amount, and adds each to the batch
/// of every target whose filter it matches (records below a target's own `next` are not
/// its). Returns the counts and the next source offset to scan.
fn scan(source: &Log, from: i64, targets: &mut [Target]) -> Result<(PassStats, i64), StorageError> {
    let mut stats = PassStats::default();
    if from >= source.last_stable_offset().min(source.high_watermark()) {
        return Ok((stats, from));
    }
    let (bytes, aborted) =
        source.read_bytes_with(from, READ_BYTES_PER_PASS, Isolation::ReadCommitted)?;
    // Kafka's consumer-side rule for read_committed: a producer's transactional batches are
    // skipped from the first offset of one of its aborted transactions until its marker.
    let mut aborted_starts: Vec<(i64, i64)> = aborted
        .iter()
        .map(|a| (a.first_offset, a.producer_id))
        .collect();
    aborted_starts.sort_unstable();
    let mut aborted_starts = aborted_starts.into_iter().peekable();
    let mut aborting: HashSet<i64> = HashSet::new();

    let mut next = from;
    let mut header_buf = Vec::new();
    let mut buffers = ReaderBuffers::default();
    let mut at = 0;
    // Bounded by the bytes read: each step moves past one batch.
    while let Some(h) = bytes.get(at..).and_then(BatchHeader::parse) {
        let size = h.total_size();
        if size < HEADER_SIZE || at + size > bytes.len() {
            break;
        }
        let batch = &bytes[at..at + size];
        at += size;
        if h.last_offset() < next {
            continue;
        }
        while let Some(&(first, pid)) = aborted_starts.peek() {
            if first > h.last_offset() {
                break;
            }
            aborting.insert(pid);
            aborted_starts.next();
        }
        let skip = if h.is_control() {
            aborting.remove(&h.producer_id);
            true
        } else {
            h.is_transactional() && aborting.contains(&h.producer_id)
        };
        if !skip {
            let mut reader = RecordReader::for_batch(batch, MAX_DECOMPRESSED_BYTES, buffers)
                .map_err(|e| corrupt(&e.to_string()))?;
            // Bounded by the batch's records.
            while let Some(r) = reader.next_record().map_err(|e| corrupt(&e.to_string()))? {
                let offset = h.base_offset + i64::from(r.meta.offset_delta);
                if offset < next {
                    continue;
                }
                stats.scanned += 1;
                let timestamp = if h.is_log_append_time() {
                    h.max_timestamp
                } else {
                    h.base_timestamp.saturating_add(r.meta.timestamp_delta)
                };
                let fields = RecordFields {
                    key: r.key,
                    timestamp,
                    headers: r.headers,
                };
                header_buf.clear();
                for t in targets.iter_mut() {
                    if offset < t.next || !t.filter.matches(&fields) {
                        continue;
                    }
                    if header_buf.is_empty() {
                        let offset_text = offset.to_string();
                        header_buf.extend_from_slice(r.headers.raw());
                        put_varint(&mut header_buf, SOURCE_OFFSET_HEADER.len() as i64);
                        header_buf.extend_from_slice(SOURCE_OFFSET_HEADER.as_bytes());
                        put_varint(&mut header_buf, offset_text.len() as i64);
                        header_buf.extend_from_slice(offset_text.as_bytes());
                    }
                    let builder = t.builder.get_or_insert_with(|| {
                        t.base_timestamp = timestamp;
                        BatchBuilder::new(
                            BatchSpec {
                                base_timestamp: timestamp,
                                ..BatchSpec::default()
                            },
                            Compression::None,
                        )
                    });
                    builder.push(&NewRecord {
                        offset_delta: t.offset_delta,
                        timestamp_delta: timestamp.saturating_sub(t.base_timestamp),
                        key: r.key,
                        value: r.value,
                        headers: Headers::from_raw(r.headers.count() + 1, &header_buf),
                    });
                    t.offset_delta += 1;
                    t.pending_bytes += r.key.map_or(0, <[u8]>::len)
                        + r.value.map_or(0, <[u8]>::len)
                        + header_buf.len();
                    stats.copied += 1;
                    if t.pending_bytes >= VIEW_BATCH_BYTES {
                        t.finish_batch()?;
                    }
                }
            }
            buffers = reader.into_buffers();
        }
        next = h.last_offset() + 1;
    }
    Ok((stats, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn view_configs_are_checked() {
        assert!(spec(&configs(&[("retention.ms", "1")])).unwrap().is_none());
        let s = spec(&configs(&[(SOURCE_KEY, "orders"), (FILTER_KEY, "a = 1")]))
            .unwrap()
            .unwrap();
        assert_eq!(s.source, "orders");
        assert!(matches!(
            spec(&configs(&[(SOURCE_KEY, "orders")])),
            Err(ViewConfigError::Incomplete)
        ));
        assert!(matches!(
            spec(&configs(&[(FILTER_TYPE_KEY, "TAG")])),
            Err(ViewConfigError::Incomplete)
        ));
        let e = spec(&configs(&[(SOURCE_KEY, "o"), (FILTER_KEY, "a = ")])).unwrap_err();
        assert_eq!(e.key(), FILTER_KEY);
        assert!(e.to_string().contains("column 5"), "{e}");
        let e = spec(&configs(&[
            (SOURCE_KEY, "o"),
            (FILTER_KEY, "a"),
            (FILTER_TYPE_KEY, "regex"),
        ]))
        .unwrap_err();
        assert_eq!(e.key(), FILTER_TYPE_KEY);
        let e = spec(&configs(&[("rill.view.sorce", "o")])).unwrap_err();
        assert_eq!(e.key(), "rill.view.sorce");
        let tags = spec(&configs(&[
            (SOURCE_KEY, "o"),
            (FILTER_KEY, "A || B"),
            (FILTER_TYPE_KEY, "tag"),
        ]));
        assert!(tags.unwrap().is_some());
    }
}
