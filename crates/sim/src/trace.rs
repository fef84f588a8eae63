//! The run's trace: a hash of every step (two runs of one seed must agree on
//! it) and the last lines, printed when an invariant fails.

use std::collections::VecDeque;
use std::fmt;

const KEPT: usize = 60;

#[derive(Debug)]
pub struct Trace {
    hash: u64,
    recent: VecDeque<String>,
}

impl Default for Trace {
    fn default() -> Trace {
        Trace { hash: 0xcbf2_9ce4_8422_2325, recent: VecDeque::with_capacity(KEPT) }
    }
}

impl Trace {
    fn mix(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.hash = (self.hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// A step not worth reading in a failure report (a quiet tick, sync
    /// traffic): hashed only.
    pub fn quiet(&mut self, at: u64, who: usize, bytes: &[u8]) {
        self.mix(&at.to_le_bytes());
        self.mix(&(who as u64).to_le_bytes());
        self.mix(bytes);
    }

    pub fn note(&mut self, at: u64, who: &str, what: fmt::Arguments) {
        let line = format!("{:>9.3}s {who:<4} {what}", at as f64 / 1e9);
        self.mix(line.as_bytes());
        if self.recent.len() == KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn recent(&self) -> Vec<String> {
        self.recent.iter().cloned().collect()
    }
}
