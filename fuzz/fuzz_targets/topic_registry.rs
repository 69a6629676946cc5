//! The topic registry file (`rill-topics.meta`) as found on disk at start-up, parsed in
//! memory as `TopicRegistry::load` parses it (`topics::parse`): any bytes are either parsed
//! or refused with a `RegistryError`, never a panic. A file that parses, and whose topic
//! configs storage accepts (what `load` then needs to reconcile the partitions), must survive
//! a write back: rendered as the broker persists it (`topics::render`) and parsed again, it
//! gives the same cluster id and the same topics (names, ids, partition counts, configs).
//!
//! Reading the file and reconciling the partitions on disk are covered by the broker's
//! restart tests (`topic_configs_survive_a_restart`, `topics_ids_configs_and_data_survive_a_restart`).

#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rill_broker::topics::{self, REGISTRY_FILE_NAME};

fuzz_target!(|data: &[u8]| {
    // `load` reads the file as UTF-8 text; anything else is an I/O error before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new(REGISTRY_FILE_NAME);
    let Ok((cluster_id, parsed)) = topics::parse(path, text) else {
        return;
    };
    if parsed.values().any(|meta| meta.log_config().is_err()) {
        return; // `load` refuses it while reconciling
    }
    let published: BTreeMap<_, _> = parsed
        .iter()
        .map(|(name, meta)| (name.clone(), Arc::new(meta.clone())))
        .collect();
    let written = topics::render(&cluster_id, &published);
    let (again_id, again) = topics::parse(path, &written).expect("a written registry parses");
    assert_eq!(again_id, cluster_id, "cluster id changed by a write back");
    assert_eq!(again, parsed, "topics changed by a write back");
});
