//! Sans-IO core of the pool, where conversations live on more than one
//! machine: where the coordinator places a new topic (`placement`), and
//! which messages ask to move a topic to another machine (`moves`). Plain
//! functions over values; the shell decides when to call them.

pub mod moves;
pub mod placement;

pub use moves::{MoveRequest, parse_move};
pub use placement::{Candidate, Excluded, place};
