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

/// Three machines of one chain: `a` created it, `b` and `c` joined; each
/// registers the others, as replication would have.
fn chain_of_three(dir: &std::path::Path) -> [Instance; 3] {
    let a = Instance::init(&dir.join("a"), "a").unwrap();
    let mut b = Instance::init(&dir.join("b"), "b").unwrap();
    let mut c = Instance::init(&dir.join("c"), "c").unwrap();
    for joiner in [&mut b, &mut c] {
        let cert = a.certify(joiner.own_claims(roost_identity::Role::Satellite)).unwrap();
        joiner.adopt_identity(a.seed.clone().unwrap(), Some(cert), roost_identity::Role::Satellite).unwrap();
    }
    let machines = [a, b, c];
    for one in &machines {
        let store = one.open_store().unwrap();
        for other in machines.iter().filter(|m| m.id != one.id) {
            one.register(&store, &other.certificate, &[]).unwrap();
        }
    }
    machines
}

#[test]
fn a_machine_opened_while_it_takes_rotations_never_shows_half_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let [mut a, mut b, _c] = chain_of_three(dir.path());
    let (a_store, b_store) = (a.open_store().unwrap(), b.open_store().unwrap());
    let rotations: Vec<String> = (0..20).map(|_| a.rotate(&a_store, "").unwrap().to_text()).collect();
    let home = b.home.clone();
    let taking = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut opened = 0;
            while taking.load(std::sync::atomic::Ordering::Relaxed) {
                let seen = Instance::open(&home).unwrap_or_else(|e| panic!("after {opened} opens: {e}"));
                assert!(seen.certificate_valid());
                opened += 1;
            }
            opened
        });
        for text in &rotations {
            b.take_rotation(&b_store, text).unwrap().expect("each rotation is new to b");
        }
        taking.store(false, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    });
    assert_eq!(Instance::open(&home).unwrap().roost_id(), a.roost_id());
}

#[test]
fn a_rotation_moves_the_machines_it_keeps_and_leaves_the_revoked_one_behind() {
    let dir = tempfile::tempdir().unwrap();
    let [mut a, mut b, mut c] = chain_of_three(dir.path());
    let first = a.roost_id();
    let a_store = a.open_store().unwrap();
    let old_revocation = a.revoke(&a_store, &c.id).unwrap();
    assert!(old_revocation.is_revoked());
    let rotation = a.rotate(&a_store, &c.id).unwrap();
    assert!(rotation.keeps(&a.id) && rotation.keeps(&b.id) && !rotation.keeps(&c.id));
    let rotated = a.roost_id();
    assert_ne!(rotated, first);
    assert!(a.certificate_valid(), "a certified itself again under the new identity");

    // b takes it: the new identity, a certificate from it, the old ID kept
    // in the lineage; the lease's key stays the chain's first Roost ID.
    let b_store = b.open_store().unwrap();
    let taken = b.take_rotation(&b_store, &rotation.to_text()).unwrap().expect("new to b");
    assert_eq!(taken.roost_id, rotated);
    assert_eq!(taken.left_behind, ["c"], "c was registered at b and is not kept");
    assert_eq!(b.roost_id(), rotated);
    let mut b = Instance::open(&b.home).unwrap();
    assert_eq!(b.roost_id(), rotated);
    assert!(b.certificate_valid());
    let earlier: Vec<_> = b.earlier_ids().into_iter().map(|(id, _)| id).collect();
    assert_eq!(earlier, std::slice::from_ref(&first));
    assert_eq!((b.chain_key(), a.chain_key()), (first.clone(), first.clone()));
    assert!(b.take_rotation(&b_store, &rotation.to_text()).unwrap().is_none(), "taken once");
    assert!(b_store.instance_by_id(&c.id).unwrap().is_revoked());
    // A revocation the old identity signed still counts after the rotation.
    let revocations = a_store.revocations().unwrap();
    let (_, text) = revocations.iter().find(|(id, _)| *id == c.id).unwrap();
    b.take_revocation(&b_store, text).unwrap();

    // c holds the old seed but cannot open the new one; what it certifies
    // from the old seed no longer registers anywhere.
    let c_store = c.open_store().unwrap();
    let refused = c.take_rotation(&c_store, &rotation.to_text()).unwrap_err();
    assert!(refused.to_string().contains("not among those the rotation keeps"), "{refused}");
    assert_eq!(Instance::open(&c.home).unwrap().roost_id(), first);
    let stranger = Instance::init(&dir.path().join("d"), "d").unwrap();
    let minted = c.certify(stranger.own_claims(roost_identity::Role::Satellite)).unwrap();
    for (machine, store) in [(&a, &a_store), (&b, &b_store)] {
        let err = machine.register(store, &minted, &[]).unwrap_err();
        assert!(err.to_string().contains("another identity"), "{err}");
    }
}

#[test]
fn a_rotation_from_another_identity_or_altered_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let [mut a, mut b, _c] = chain_of_three(dir.path());
    let before = b.roost_id();
    let foreign = {
        let mut other = Instance::init(&dir.path().join("x"), "x").unwrap();
        let store = other.open_store().unwrap();
        other.register(&store, &other.certificate.clone(), &[]).unwrap();
        other.rotate(&store, "").unwrap()
    };
    let b_store = b.open_store().unwrap();
    let err = b.take_rotation(&b_store, &foreign.to_text()).unwrap_err();
    assert!(err.to_string().contains("another identity"), "{err}");

    let a_store = a.open_store().unwrap();
    let mut altered = a.rotate(&a_store, "").unwrap();
    altered.issued_at += 1;
    assert!(b.take_rotation(&b_store, &altered.to_text()).is_err());
    assert_eq!(Instance::open(&b.home).unwrap().roost_id(), before, "b stays where it was");
    assert_eq!(b.roost_id(), before);
}
