//! Roost's sans-IO core.
//!
//! Everything here is a plain value or a pure function: the data model and its
//! validation, row ids, the Lamport clock and the change record. Nothing in this
//! crate reads a clock, touches a file or a socket, or knows about SQLite or
//! tokio. The shell (`roost-store`, `roost-gateway`) feeds it the current time
//! and random bytes and performs whatever it decides. Later protocol cores
//! (replication, the lease) live beside these modules under the same rule, so a
//! deterministic simulator can drive them.

pub mod change;
pub mod clock;
pub mod hex;
pub mod id;
pub mod protocol;
pub mod role;
pub mod schema;
pub mod session;
pub mod sync;
pub mod validate;
pub mod wire;

pub use change::{Entry, GENESIS, Op};
pub use clock::Lamport;
pub use id::RowId;
pub use role::Role;
pub use schema::{EPOCH, Field, FieldKind, Table};
pub use validate::{Fields, ValidationError};
