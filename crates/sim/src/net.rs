//! The network between machines: which directed links are cut, and what
//! happens to one message on a link (lost, delayed, sometimes delivered
//! twice). Reordering comes from independent delays.
//!
//! Cuts are kept by id so that overlapping partitions heal one at a time: a
//! symmetric split, a one-way cut, or a bridge (A–B and B–C connected, A–C
//! not) are all sets of cut directed links.

use std::collections::BTreeMap;

use crate::rng::Rng;

/// The longest delay spike; spikes stop this long before the heal, so every
/// message in flight at the heal is a normally delayed one.
pub const SPIKE_MAX: u64 = 1_500_000_000;

#[derive(Debug)]
pub struct Net {
    size: usize,
    cuts: BTreeMap<u64, Vec<(usize, usize)>>,
    blocked: Vec<bool>,
    losses: BTreeMap<u64, u32>,
    storms: BTreeMap<u64, u64>,
    /// Normal one-way delay, nanoseconds.
    pub latency: (u64, u64),
    pub dup_ppm: u32,
    pub spike_ppm: u32,
}

impl Net {
    pub fn new(size: usize, latency: (u64, u64), dup_ppm: u32, spike_ppm: u32) -> Net {
        Net {
            size,
            cuts: BTreeMap::new(),
            blocked: vec![false; size * size],
            losses: BTreeMap::new(),
            storms: BTreeMap::new(),
            latency,
            dup_ppm,
            spike_ppm,
        }
    }

    pub fn open(&self, from: usize, to: usize) -> bool {
        !self.blocked[from * self.size + to]
    }

    pub fn cut(&mut self, id: u64, links: Vec<(usize, usize)>) {
        self.cuts.insert(id, links);
        self.rebuild();
    }

    pub fn uncut(&mut self, id: u64) {
        self.cuts.remove(&id);
        self.rebuild();
    }

    fn rebuild(&mut self) {
        self.blocked.iter_mut().for_each(|b| *b = false);
        for &(from, to) in self.cuts.values().flatten() {
            self.blocked[from * self.size + to] = true;
        }
    }

    /// A period in which each message is lost with probability `ppm`.
    pub fn lossy(&mut self, id: u64, ppm: u32) {
        self.losses.insert(id, ppm);
    }

    pub fn lossless(&mut self, id: u64) {
        self.losses.remove(&id);
    }

    /// A period in which delays reach up to `max` nanoseconds.
    pub fn storm(&mut self, id: u64, max: u64) {
        self.storms.insert(id, max);
    }

    pub fn calm(&mut self, id: u64) {
        self.storms.remove(&id);
    }

    /// Every cut, loss and storm ends.
    pub fn heal(&mut self) {
        self.cuts.clear();
        self.losses.clear();
        self.storms.clear();
        self.rebuild();
    }

    /// The delays of the copies of one message that will arrive: none when it
    /// is lost, two when it is duplicated. `lossy` is false for the effect
    /// sink's link, which only delays, duplicates and reorders.
    pub fn fate(&self, rng: &mut Rng, lossy: bool) -> Vec<u64> {
        let loss = self.losses.values().max().copied().unwrap_or(0);
        if lossy && rng.chance(loss) {
            return Vec::new();
        }
        let copies = if rng.chance(self.dup_ppm) { 2 } else { 1 };
        (0..copies).map(|_| self.delay(rng)).collect()
    }

    fn delay(&self, rng: &mut Rng) -> u64 {
        let max = self.storms.values().max().copied().unwrap_or(0).max(self.latency.1);
        let base = rng.between(self.latency.0, max);
        if rng.chance(self.spike_ppm) { base + rng.between(0, SPIKE_MAX) } else { base }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_cuts_heal_one_at_a_time() {
        let mut net = Net::new(3, (1, 2), 0, 0);
        net.cut(1, vec![(0, 2), (2, 0)]);
        net.cut(2, vec![(0, 2)]);
        net.uncut(1);
        assert!(!net.open(0, 2), "the one-way cut still holds");
        assert!(net.open(2, 0));
        net.heal();
        assert!(net.open(0, 2));
    }
}
