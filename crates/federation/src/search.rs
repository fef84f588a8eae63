//! Merging the answers of a search of all instances. Pure, so the rules are
//! tested without a network.
//!
//! Raw bm25 scores are not comparable across instances (they depend on each
//! corpus), so results are ranked by reciprocal-rank fusion: the hit at rank
//! `r` (from 1) of an instance scores `(K + 1) / (K + r)`, 1.0 for every
//! instance's best. A memory several instances hold appears once, with the
//! best of its scores and every holder; it is not boosted for being
//! replicated.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The usual reciprocal-rank fusion constant.
const K: f64 = 60.0;

/// An instance, as results name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRef {
    pub id: String,
    pub name: String,
}

/// What one instance contributed.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Its hits, best first, as `roost_search_memories` returns them.
    Answered(Vec<Value>),
    TimedOut,
    Unreachable(String),
    /// It answered with an error (a refusal, or a query it rejects).
    Refused(String),
    /// Not asked, and why.
    Skipped(String),
}

/// One instance's part of the search.
#[derive(Debug, Clone)]
pub struct Answer {
    pub instance: InstanceRef,
    pub outcome: Outcome,
    /// How long its part took, in milliseconds (0 when skipped).
    pub elapsed_ms: f64,
}

/// One merged result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hit {
    pub id: String,
    /// On the common scale: 1.0 is some instance's best hit.
    pub score: f64,
    pub memory: Value,
    pub snippet: Value,
    /// The instances whose answer held this memory; the one where it ranked
    /// best comes first.
    pub holders: Vec<InstanceRef>,
}

/// How one instance's part of a search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Answered,
    TimedOut,
    Unreachable,
    /// It answered with an error (say, the search is not open to this
    /// machine there).
    Refused,
    Skipped,
}

impl Status {
    /// In words, for people.
    pub fn label(self) -> &'static str {
        match self {
            Status::Answered => "answered",
            Status::TimedOut => "timed out",
            Status::Unreachable => "unreachable",
            Status::Refused => "refused",
            Status::Skipped => "skipped",
        }
    }
}

/// How one instance fared, for the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    #[serde(flatten)]
    pub instance: InstanceRef,
    pub outcome: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub ms: f64,
}

/// The merged answer of a search of all instances.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Merged {
    pub count: usize,
    pub results: Vec<Hit>,
    pub instances: Vec<Report>,
    /// Names per outcome, for a quick read.
    pub answered: Vec<String>,
    pub timed_out: Vec<String>,
    pub unreachable: Vec<String>,
    /// Instances that answered with an error (e.g. the tool is not open to
    /// this machine there).
    pub refused: Vec<String>,
    pub skipped: Vec<String>,
}

/// Merges the answers by memory id and keeps the best `limit`.
pub fn merge(answers: Vec<Answer>, limit: usize) -> Merged {
    let mut by_id: HashMap<String, (Hit, usize)> = HashMap::new();
    let mut reports = Vec::with_capacity(answers.len());
    for answer in answers {
        let (outcome, results, reason) = match &answer.outcome {
            Outcome::Answered(hits) => (Status::Answered, Some(hits.len()), None),
            Outcome::TimedOut => (Status::TimedOut, None, None),
            Outcome::Unreachable(why) => (Status::Unreachable, None, Some(why.clone())),
            Outcome::Refused(why) => (Status::Refused, None, Some(why.clone())),
            Outcome::Skipped(why) => (Status::Skipped, None, Some(why.clone())),
        };
        reports.push(Report { instance: answer.instance.clone(), outcome, results, reason, ms: answer.elapsed_ms });
        let Outcome::Answered(hits) = answer.outcome else { continue };
        for (rank, hit) in hits.into_iter().enumerate() {
            let Some(id) = hit["memory"]["id"].as_str().map(str::to_string) else { continue };
            let score = (K + 1.0) / (K + rank as f64 + 1.0);
            match by_id.get_mut(&id) {
                Some((merged, best_rank)) => {
                    merged.holders.push(answer.instance.clone());
                    if rank < *best_rank {
                        *best_rank = rank;
                        merged.score = score;
                        merged.memory = hit["memory"].clone();
                        merged.snippet = hit["snippet"].clone();
                        merged.holders.rotate_right(1);
                    }
                }
                None => {
                    let merged = Hit {
                        id: id.clone(),
                        score,
                        memory: hit["memory"].clone(),
                        snippet: hit["snippet"].clone(),
                        holders: vec![answer.instance.clone()],
                    };
                    by_id.insert(id, (merged, rank));
                }
            }
        }
    }
    let mut results: Vec<Hit> = by_id.into_values().map(|(hit, _)| hit).collect();
    let importance = |h: &Hit| h.memory["importance"].as_i64().unwrap_or(0);
    results.sort_by(|a, b| {
        b.score.total_cmp(&a.score).then_with(|| importance(b).cmp(&importance(a))).then_with(|| a.id.cmp(&b.id))
    });
    results.truncate(limit);
    let names = |outcome: Status| -> Vec<String> {
        reports.iter().filter(|r| r.outcome == outcome).map(|r| r.instance.name.clone()).collect()
    };
    Merged {
        count: results.len(),
        answered: names(Status::Answered),
        timed_out: names(Status::TimedOut),
        unreachable: names(Status::Unreachable),
        refused: names(Status::Refused),
        skipped: names(Status::Skipped),
        results,
        instances: reports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn instance(name: &str) -> InstanceRef {
        InstanceRef { id: format!("id-{name}"), name: name.into() }
    }

    fn hits(ids: &[&str]) -> Outcome {
        Outcome::Answered(
            ids.iter().map(|id| json!({"memory": {"id": id, "importance": 5}, "snippet": id, "score": 1.0})).collect(),
        )
    }

    fn answer(name: &str, outcome: Outcome) -> Answer {
        Answer { instance: instance(name), outcome, elapsed_ms: 1.0 }
    }

    #[test]
    fn replicated_memories_appear_once_with_every_holder() {
        let merged =
            merge(vec![answer("a", hits(&["shared", "only-a"])), answer("b", hits(&["only-b", "shared"]))], 10);
        let ids: Vec<&str> = merged.results.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids.len(), 3);
        let shared = merged.results.iter().find(|h| h.id == "shared").unwrap();
        assert_eq!(shared.holders, vec![instance("a"), instance("b")]);
        assert_eq!(shared.score, 1.0, "its best rank counts, not the sum");
        let only_b = merged.results.iter().find(|h| h.id == "only-b").unwrap();
        assert_eq!(only_b.score, 1.0, "every instance's best scores alike");
        assert!(merged.results.iter().find(|h| h.id == "only-a").unwrap().score < 1.0);
    }

    #[test]
    fn the_best_rank_puts_its_holder_first() {
        let merged = merge(vec![answer("a", hits(&["x", "m"])), answer("b", hits(&["m"]))], 10);
        let m = merged.results.iter().find(|h| h.id == "m").unwrap();
        assert_eq!(m.holders, vec![instance("b"), instance("a")]);
    }

    #[test]
    fn reports_every_outcome_and_keeps_the_limit() {
        let merged = merge(
            vec![
                answer("a", hits(&["1", "2", "3"])),
                answer("b", Outcome::TimedOut),
                answer("c", Outcome::Unreachable("connection refused".into())),
                answer("d", Outcome::Skipped("revoked".into())),
            ],
            2,
        );
        assert_eq!(merged.count, 2);
        assert_eq!(merged.answered, vec!["a"]);
        assert_eq!(merged.timed_out, vec!["b"]);
        assert_eq!(merged.unreachable, vec!["c"]);
        assert_eq!(merged.skipped, vec!["d"]);
        assert_eq!(merged.instances[2].reason.as_deref(), Some("connection refused"));
    }
}
