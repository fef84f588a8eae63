//! The agent's ledger through real databases: one row per channel message
//! wherever it was received, reply records fenced by the lease epoch.

mod common;

use common::{Node, nodes};

use roost_agent::{Reply, Stage};
use roost_core::protocol::SignedEntry;
use roost_store::agent::Inbound;
use roost_store::{StoreError, Verdict};

fn ship(nodes: &mut [Node], from: usize, to: usize) -> Vec<Verdict> {
    let entries: Vec<SignedEntry> =
        nodes[from].store.entries_after(0, 100_000).unwrap().into_iter().map(|(_, e)| e).collect();
    nodes[to].store.apply(&entries).unwrap()
}

fn inbound<'a>(id: &'a str, text: &'a str) -> Inbound<'a> {
    Inbound { channel: "webhook", topic: "t", message_id: id, sender: Some("ann"), text }
}

#[test]
fn one_message_received_by_two_machines_is_one_row_without_a_conflict() {
    let mut n = nodes();
    let (a, new_a) = n[0].store.record_message(&inbound("m1", "hi")).unwrap();
    let (again, new_again) = n[0].store.record_message(&inbound("m1", "hi")).unwrap();
    assert!(new_a && !new_again, "the second delivery is not recorded again");
    assert_eq!(a, again);
    let (b, new_b) = n[1].store.record_message(&inbound("m1", "hi")).unwrap();
    assert!(new_b);
    assert_eq!(a.id, b.id, "the row id comes from the channel and its message id");
    ship(&mut n, 0, 1);
    ship(&mut n, 1, 0);
    for node in &n[..2] {
        let ledger = node.store.ledger(None).unwrap();
        assert_eq!(ledger.len(), 1);
        assert_eq!(node.store.open_conflicts().unwrap(), 0, "the same message twice is no conflict");
    }
    assert_eq!(n[0].store.ledger(None).unwrap(), n[1].store.ledger(None).unwrap());
}

#[test]
fn a_reply_record_replicates_with_its_epoch_and_a_stale_holder_is_fenced() {
    let mut n = nodes();
    let (m, _) = n[0].store.record_message(&inbound("m1", "hi")).unwrap();
    let claim = Reply::claimed(&m.id, 1, None, "a");
    n[0].store.write_reply(&claim, 3).unwrap();
    let replied = claim.replied("hello".into(), "a");
    n[0].store.write_reply(&replied, 3).unwrap();
    ship(&mut n, 0, 1);
    let entry = &n[1].store.ledger(Some("t")).unwrap()[0];
    assert_eq!(entry.reply, Some((replied.clone(), 3)));

    // B took the role at epoch 5 and sent the committed reply.
    n[1].store.observe_epoch(5).unwrap();
    n[1].store.write_reply(&replied.sent("b"), 5).unwrap();
    ship(&mut n, 1, 0);
    let (reply, epoch) = n[0].store.reply(&m.id).unwrap().unwrap();
    assert_eq!((reply.stage, epoch), (Stage::Sent, 5));
    // A, back from a pause, cannot write under its old epoch any more.
    let stale = n[0].store.write_reply(&replied, 3);
    assert!(matches!(stale, Err(StoreError::StaleEpoch { given: 3, highest: 5 })), "{stale:?}");
}

#[test]
fn a_topic_owners_reply_is_fenced_by_the_topics_later_grant_and_never_by_the_lease() {
    use roost_pool::topic_stamp;
    let mut n = nodes();
    let (m, _) = n[0].store.record_message(&inbound("m1", "hi")).unwrap();
    ship(&mut n, 0, 1);
    let (old, new) = (topic_stamp(5, 1), topic_stamp(5, 2));
    let claim = Reply::claimed(&m.id, 1, None, "a");
    n[0].store.write_reply(&claim, old).unwrap();
    assert_eq!(n[0].store.topic_epoch("t").unwrap(), old);
    assert_eq!(n[0].store.highest_epoch().unwrap(), 0, "a topic stamp leaves the lease's fence alone");
    ship(&mut n, 0, 1);
    assert_eq!(n[1].store.topic_epoch("t").unwrap(), old, "a received record raises its topic's fence");

    // The topic moved to B, whose claim reaches A: A's old stamp is refused.
    n[1].store.write_reply(&Reply::claimed(&m.id, 2, None, "b"), new).unwrap();
    ship(&mut n, 1, 0);
    let stale = n[0].store.write_reply(&claim.replied("late".into(), "a"), old);
    assert!(matches!(stale, Err(StoreError::StaleTopicEpoch { given, highest, .. }) if given == old && highest == new));
    // Nor may a holder working without the pool write over it.
    let plain = n[0].store.write_reply(&claim, 7);
    assert!(matches!(plain, Err(StoreError::StaleTopicEpoch { given: 7, .. })), "{plain:?}");

    // A grant learnt of fences before any record of it arrives.
    let (m2, _) = n[0].store.record_message(&Inbound { topic: "u", ..inbound("m2", "hi") }).unwrap();
    n[0].store.observe_topic_epoch("u", topic_stamp(6, 1)).unwrap();
    let early = n[0].store.write_reply(&Reply::claimed(&m2.id, 1, None, "a"), new);
    assert!(matches!(early, Err(StoreError::StaleTopicEpoch { .. })), "{early:?}");
    let nowhere = n[0].store.write_reply(&Reply::claimed("no-such-message", 1, None, "a"), new);
    assert!(matches!(nowhere, Err(StoreError::NoTopic(_))), "{nowhere:?}");
}
