//! Sans-IO core of the pool, where conversations live on more than one
//! machine: who runs a topic, under which per-topic epoch, and when the
//! coordinator may hand it to another machine (`ownership`); where the
//! coordinator places a new topic (`placement`); the coordinator's state
//! and its answers to asks and transfers (`coordination`); and which messages ask to
//! move a topic to another machine (`moves`). Plain values and functions,
//! fed the time; the shell decides when to call them.

pub mod coordination;
pub mod moves;
pub mod ownership;
pub mod placement;
pub mod stamp;

pub use coordination::{Answer, Ask, Coordination, PLACEMENT_PREFIX, Placed, Settings, Transfer, TransferRefused};
pub use moves::{MoveRequest, parse_move};
pub use ownership::{Coordinator, Grant, Member, Refused, Tenure, Timing};
pub use placement::{Candidate, Excluded, place};
pub use stamp::{is_topic_stamp, topic_stamp};
