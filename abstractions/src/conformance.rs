//! Conformance suites: one per contract, run by every provider against itself, so any two
//! providers of a contract behave the same. Enable the `conformance` feature in a
//! provider's dev-dependencies and instantiate a suite with its macro:
//!
//! ```ignore
//! omnirelay_abstractions::snapshot_store_conformance!(|| SqliteStore::open_in_memory().unwrap());
//! omnirelay_abstractions::topology_strategy_conformance!(ring_hash, RingHashStrategy::default);
//! ```
//!
//! The suites panic on the first violation, naming the rule.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    ErrorCode,
    config::ConfigSource,
    store::{SnapshotRecord, SnapshotStore},
};

mod topology;

pub use topology::{
    topology_degenerate_member_sets, topology_lookups_honour_weights_and_skip,
    topology_member_order_does_not_matter, topology_shares_follow_weights,
    topology_strategy_contract,
};

fn record(version: u64) -> SnapshotRecord {
    SnapshotRecord {
        version,
        created_unix_ms: 1_700_000_000_000 + version as i64,
        source: format!("conformance-{version}"),
        config_sha256: format!("{version:064x}"),
        signed: vec![version as u8; 3 + version as usize % 5],
    }
}

/// `SnapshotStore`: ordering, conflicts, lookups and history.
pub fn snapshot_store_round_trip(store: &dyn SnapshotStore) {
    assert_eq!(
        store.latest().expect("latest on empty store"),
        None,
        "empty store has no latest"
    );
    for v in [1, 2, 5] {
        store.put(&record(v)).expect("put increasing versions");
    }
    assert_eq!(store.latest().expect("latest"), Some(record(5)));
    assert_eq!(
        store.get(2).expect("get"),
        Some(record(2)),
        "get returns the exact record"
    );
    assert_eq!(store.get(3).expect("get missing"), None);
    let history = store.history(2).expect("history");
    assert_eq!(
        history,
        vec![record(5), record(2)],
        "history is newest first and limited"
    );
}

/// `SnapshotStore`: a version that is not greater than the latest is a Conflict, and the
/// store keeps what it had.
pub fn snapshot_store_rejects_non_increasing_versions(store: &dyn SnapshotStore) {
    store.put(&record(10)).expect("put");
    for v in [10, 9] {
        let err = store
            .put(&record(v))
            .expect_err("non-increasing version must fail");
        assert_eq!(err.code(), ErrorCode::Conflict, "{err}");
    }
    assert_eq!(store.latest().expect("latest"), Some(record(10)));
}

/// `ConfigSource`: `load` returns what was written; `watch` reports a change within 5 s;
/// dropping the guard stops notifications.
pub fn config_source_load_and_watch(source: &dyn ConfigSource, write: &dyn Fn(&[u8])) {
    write(b"version = 1\n");
    let doc = source.load().expect("load");
    assert_eq!(doc.bytes, b"version = 1\n");
    assert!(!doc.origin.is_empty(), "a document names its origin");

    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let guard = source
        .watch(Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }))
        .expect("watch");
    let before = hits.load(Ordering::SeqCst);
    write(b"version = 2\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    while hits.load(Ordering::SeqCst) == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        hits.load(Ordering::SeqCst) > before,
        "no change notification within 5 s"
    );
    assert_eq!(source.load().expect("reload").bytes, b"version = 2\n");

    drop(guard);
    std::thread::sleep(Duration::from_millis(300));
    let after_drop = hits.load(Ordering::SeqCst);
    write(b"version = 3\n");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        after_drop,
        "notified after the guard dropped"
    );
}

/// Instantiates the `SnapshotStore` suite for a provider; `$make` builds a fresh, empty store.
#[macro_export]
macro_rules! snapshot_store_conformance {
    ($make:expr) => {
        #[test]
        fn conformance_snapshot_store_round_trip() {
            let store = ($make)();
            $crate::conformance::snapshot_store_round_trip(&store);
        }
        #[test]
        fn conformance_snapshot_store_rejects_non_increasing_versions() {
            let store = ($make)();
            $crate::conformance::snapshot_store_rejects_non_increasing_versions(&store);
        }
    };
}

/// Instantiates the `TopologyStrategy` suite for a provider: a module `$name` with one
/// test per rule. `$make` builds the strategy; it is expanded inside that module, which
/// imports the caller's module (`use super::*`).
#[macro_export]
macro_rules! topology_strategy_conformance {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn lookups_honour_weights_and_skip() {
                let strategy = ($make)();
                $crate::conformance::topology_lookups_honour_weights_and_skip(&strategy);
            }
            #[test]
            fn shares_follow_weights() {
                let strategy = ($make)();
                $crate::conformance::topology_shares_follow_weights(&strategy);
            }
            #[test]
            fn degenerate_member_sets() {
                let strategy = ($make)();
                $crate::conformance::topology_degenerate_member_sets(&strategy);
            }
            #[test]
            fn member_order_does_not_matter() {
                let strategy = ($make)();
                $crate::conformance::topology_member_order_does_not_matter(&strategy);
            }
        }
    };
}
