//! Sans-IO core of the awake agent: the message ledger's rules and what to
//! do next (`ledger`), when work may start and a reply may leave
//! (`outbox`), when a holder that gets nothing done hands the role over
//! (`liveness`), and the redaction of secrets before
//! a conversation enters the replicated log (`redact`), and the Telegram Bot
//! API's shapes (`telegram`). Plain functions over
//! values; the shell in `roost-machine` reads the store, runs the handler and
//! talks to the channels.

pub mod ledger;
pub mod liveness;
pub mod outbox;
pub mod redact;
pub mod telegram;

pub use ledger::{Counts, Entry, Limits, Message, Reply, Stage, Turn, Work};
pub use redact::redact;
