//! Sans-IO core of the awake agent: the message ledger's rules and the
//! fenced outbox's decisions (`ledger`), and the redaction of secrets before
//! a conversation enters the replicated log (`redact`). Plain functions over
//! values; the shell in `roost-machine` reads the store, runs the handler and
//! talks to the channels.

pub mod ledger;
pub mod redact;

pub use ledger::{Counts, Entry, Limits, Message, Reply, Stage, Turn, Work};
pub use redact::redact;
