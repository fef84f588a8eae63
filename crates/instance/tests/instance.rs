//! Instance directories: creation, reopening, isolation, concurrent first runs.

use roost_instance::{Instance, InstanceError};

#[test]
fn init_then_open_gives_the_same_instance() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let created = Instance::init(&home, "grackle").unwrap();
    let opened = Instance::open(&home).unwrap();
    assert_eq!(created.id, opened.id);
    assert_eq!(opened.config.name, "grackle");
    assert_eq!(created.key_fingerprint(), opened.key_fingerprint());
    assert!(matches!(Instance::init(&home, "other"), Err(InstanceError::Exists { .. })));
    assert!(matches!(Instance::open(&dir.path().join("nowhere")), Err(InstanceError::Missing(_))));
}

#[test]
fn two_homes_are_two_instances() {
    let dir = tempfile::tempdir().unwrap();
    let a = Instance::init(&dir.path().join("a"), "a").unwrap();
    let b = Instance::init(&dir.path().join("b"), "b").unwrap();
    assert_ne!(a.id, b.id);
    assert_ne!(a.key_fingerprint(), b.key_fingerprint());
    // A database copied into another home is refused rather than shared.
    std::fs::copy(a.home.join("roost.db"), b.home.join("roost.db")).unwrap();
    let _ = std::fs::remove_file(b.home.join("roost.db-wal"));
    let err = b.open_store().err().expect("foreign database refused");
    assert!(err.to_string().contains("belongs to instance"), "{err}");
}

#[test]
fn concurrent_first_runs_agree_on_one_instance() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("fresh");
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let home = &home;
                s.spawn(move || Instance::open_or_init(home, &format!("n{i}")).unwrap().id)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
}

#[test]
fn an_interrupted_init_resumes_with_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    Instance::init(&home, "first").unwrap();
    let id = Instance::open(&home).unwrap().id;
    // Simulate a crash before config.toml was linked into place.
    std::fs::remove_file(home.join("config.toml")).unwrap();
    let resumed = Instance::init(&home, "second").unwrap();
    assert_eq!(resumed.id, id);
}
