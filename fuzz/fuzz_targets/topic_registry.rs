//! The topic registry file (`rill-topics.meta`) as found on disk at start-up: any bytes are
//! either loaded (and reconciled with storage) or refused with a `RegistryError`, never a
//! panic. A registry that loads must also survive a write back and a second load.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rill_broker::topics::{TopicRegistry, REGISTRY_FILE_NAME};
use rill_storage::{LogManager, LogManagerConfig};

fuzz_target!(|data: &[u8]| {
    // Reconciling creates one directory per partition: keep inputs to a size whose topics
    // stay few (the registry itself bounds partitions per topic).
    if data.len() > 4096 {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(REGISTRY_FILE_NAME), data).expect("write registry");
    let logs = LogManager::open(LogManagerConfig::new(dir.path())).expect("open storage");
    if let Ok(registry) = TopicRegistry::load(&logs) {
        let topics = registry.all().len();
        drop(registry);
        let again = TopicRegistry::load(&logs).expect("a registry that loaded reloads");
        assert_eq!(again.all().len(), topics);
    }
    let _ = logs.close();
});
