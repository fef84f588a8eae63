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

#[test]
fn a_new_instance_is_the_home_of_a_new_chain() {
    let dir = tempfile::tempdir().unwrap();
    let a = Instance::init(&dir.path().join("a"), "a").unwrap();
    let b = Instance::init(&dir.path().join("b"), "b").unwrap();
    assert!(a.certificate_valid());
    assert_eq!(a.certificate.claims.role, roost_identity::Role::Home);
    assert_ne!(a.roost_id(), b.roost_id(), "each init starts its own chain");
    let registry = a.read_registry_file().unwrap();
    assert_eq!(registry.len(), 1);
    assert_eq!(registry[0].id, a.id);
    assert_eq!(registry, a.open_store().unwrap().instances().unwrap(), "instances.json mirrors the database");
    // b cannot be registered in a's chain: its certificate is from another identity.
    let err = a.register(&a.open_store().unwrap(), &b.certificate, &[]).unwrap_err();
    assert!(err.to_string().contains("another identity"), "{err}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(a.home.join("keys/seed.sealed")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn adopting_an_identity_moves_the_machine_into_that_chain() {
    let dir = tempfile::tempdir().unwrap();
    let a = Instance::init(&dir.path().join("a"), "a").unwrap();
    let mut b = Instance::init(&dir.path().join("b"), "b").unwrap();
    b.adopt_identity(a.seed.clone().unwrap(), None, roost_identity::Role::Satellite).unwrap();
    let reopened = Instance::open(&b.home).unwrap();
    assert_eq!(reopened.roost_id(), a.roost_id());
    assert!(reopened.certificate_valid());
    assert_eq!(reopened.certificate.claims.role, roost_identity::Role::Satellite);
    a.register(&a.open_store().unwrap(), &reopened.certificate, &["http://127.0.0.1:1".into()]).unwrap();
    assert_eq!(a.read_registry_file().unwrap().len(), 2);
}

#[test]
fn a_tampered_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = Instance::init(&dir.path().join("a"), "a").unwrap();
    let b = Instance::init(&dir.path().join("b"), "b").unwrap();
    let genuine = a.certify(b.own_claims(roost_identity::Role::Satellite)).unwrap();
    let mut renamed = genuine.clone();
    renamed.claims.name = "mallory".into();
    let mut promoted = genuine.clone();
    promoted.claims.role = roost_identity::Role::Home;
    let store = a.open_store().unwrap();
    for tampered in [renamed, promoted] {
        let err = a.register(&store, &tampered, &[]).unwrap_err();
        assert!(err.to_string().contains("signature does not verify"), "{err}");
    }
    a.register(&store, &genuine, &[]).unwrap();
}
