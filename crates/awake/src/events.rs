//! Reading the role-change logs back: each machine's terms as awake, and
//! whether any two terms of different machines overlapped.
//!
//! A term runs from its `awake` event to the `until_ns` of the matching
//! `asleep` (when it stopped acting: the end of its confirmed lease, if that
//! came before the event was written, as after a pause). All machines on one
//! host share CLOCK_BOOTTIME, so their logs compare directly; tests and
//! `roost bench failover` use this on processes of one machine.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// One line of `lease-events.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The Roost ID of the chain the role belonged to.
    pub chain: Option<String>,
    pub node: String,
    /// awake, asleep, pause, resume, or handoff-failed.
    pub event: String,
    pub epoch: Option<u64>,
    pub at: Duration,
    pub until: Option<Duration>,
    pub reason: Option<String>,
}

/// One machine's time as the holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub chain: Option<String>,
    pub node: String,
    pub epoch: u64,
    pub from: Duration,
    /// None while it is still awake.
    pub until: Option<Duration>,
}

/// The events of the machine at `home`, in order; none if it never logged.
pub fn read(home: &Path) -> std::io::Result<Vec<Event>> {
    let text = match std::fs::read_to_string(home.join("lease-events.jsonl")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let nanos = |v: &Value| v.as_u64().map(Duration::from_nanos);
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|v| {
            Some(Event {
                chain: v["chain"].as_str().map(String::from),
                node: v["node"].as_str()?.to_string(),
                event: v["event"].as_str()?.to_string(),
                epoch: v["epoch"].as_u64(),
                at: nanos(&v["at_ns"])?,
                until: nanos(&v["until_ns"]),
                reason: v["reason"].as_str().map(String::from),
            })
        })
        .collect())
}

/// Pairs each `awake` with the `asleep` of the same epoch that follows it.
/// A process killed while awake leaves an open term; pass `ended` (when it
/// was killed) to close such terms, or they stay open.
pub fn terms(events: &[Event], ended: Option<Duration>) -> Vec<Term> {
    let mut terms: Vec<Term> = Vec::new();
    for e in events {
        match (e.event.as_str(), e.epoch) {
            ("awake", Some(epoch)) => {
                terms.push(Term { chain: e.chain.clone(), node: e.node.clone(), epoch, from: e.at, until: None })
            }
            ("asleep", Some(epoch)) => {
                if let Some(term) = terms.iter_mut().rev().find(|t| t.epoch == epoch && t.until.is_none()) {
                    term.until = Some(e.until.unwrap_or(e.at));
                }
            }
            _ => {}
        }
    }
    for term in terms.iter_mut().filter(|t| t.until.is_none()) {
        term.until = ended;
    }
    terms
}

/// The first two terms of different machines of one chain that overlap in
/// time, if any.
pub fn overlap(terms: &[Term]) -> Option<(Term, Term)> {
    let mut sorted = terms.to_vec();
    sorted.sort_by_key(|t| t.from);
    for (i, a) in sorted.iter().enumerate() {
        for b in &sorted[i + 1..] {
            if a.chain == b.chain && a.node != b.node && a.until.is_none_or(|until| b.from < until) {
                return Some((a.clone(), b.clone()));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(node: &str, kind: &str, epoch: u64, at: u64, until: Option<u64>) -> Event {
        Event {
            chain: None,
            node: node.into(),
            event: kind.into(),
            epoch: Some(epoch),
            at: Duration::from_millis(at),
            until: until.map(Duration::from_millis),
            reason: None,
        }
    }

    #[test]
    fn terms_that_touch_do_not_overlap_and_a_late_asleep_counts_from_its_lease_end() {
        let events = [
            event("a", "awake", 1, 0, None),
            event("a", "asleep", 1, 100, Some(100)),
            event("b", "awake", 2, 100, None),
            // Paused past its lease: logged late, but it stopped at 150.
            event("b", "asleep", 2, 900, Some(150)),
            event("c", "awake", 3, 200, None),
        ];
        let terms = terms(&events, None);
        assert_eq!(terms.len(), 3);
        assert_eq!(overlap(&terms), None);
        let overlapping = [event("a", "awake", 1, 0, None), event("b", "awake", 2, 50, None)];
        assert!(overlap(&super::terms(&overlapping, None)).is_some());
    }
}
