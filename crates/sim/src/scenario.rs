//! What one seed runs, drawn before the run starts: the chain (how many
//! machines, a witness or not), the lease timing, each machine's clock, the
//! network's manners, and how often faults and writes come. The faults
//! themselves are drawn as the run goes, from the state they find.

use std::fmt::Write as _;
use std::time::Duration;

use roost_lease::Tenure;

use crate::Bug;
use crate::clock::Clock;
use crate::rng::Rng;

pub const MS: u64 = 1_000_000;
pub const SEC: u64 = 1_000_000_000;

#[derive(Debug, Clone)]
pub struct Scenario {
    pub names: Vec<String>,
    pub witness: Option<usize>,
    pub tenure: Tenure,
    pub handoff_timeout: Duration,
    pub clocks: Vec<Clock>,
    /// True time at which every fault heals.
    pub heal_at: u64,
    /// Two voters, one of which crashes for good shortly before the heal;
    /// the survivor then takes the role with `wakeup --force`.
    pub force: bool,
    pub latency: (u64, u64),
    pub dup_ppm: u32,
    pub spike_ppm: u32,
    /// Gap between two faults.
    pub fault_gap: (u64, u64),
    /// Gap between two client writes.
    pub write_gap: (u64, u64),
    /// Chance that an effect waits in a retry queue (0.2–5 s) on its way to
    /// the sink, so effects of an old epoch can arrive after a new one's.
    pub retry_ppm: u32,
    /// Chance that a handoff target's log never reports caught up, so the
    /// handoff times out.
    pub stall_ppm: u32,
    /// The machines (the first ones) whose chain already holds them all as
    /// voters when the run starts; one alone is a founder in its genesis view.
    pub founders: usize,
    /// The others join by pairing, each through a machine already in the
    /// chain, at a true time before the heal: (joiner, through, at). Some come
    /// close together, through different machines.
    pub joins: Vec<(usize, usize, u64)>,
    /// Whether one machine may be revoked (on one machine, the news then
    /// spreading with the registry), cutting it off from whoever knows.
    pub revocation: bool,
    /// Whether disks fail: writes of the voter state that fail for a while
    /// (a full or failing disk), and writes that stall until the machine
    /// crashes, landing or not.
    pub disk_faults: bool,
    /// Whether the pool runs the conversations: each topic on the machine
    /// the coordinator (the holder) grants it to, under its topic stamp,
    /// with transfers coming while the faults do; each replica's capacity.
    pub pool: Option<Vec<u32>>,
}

impl Scenario {
    pub fn draw(rng: &mut Rng, bug: Option<Bug>) -> Scenario {
        // 3 voters, 2 + witness, 4, 5, 3 + witness, 2 (safety only), 2 with force.
        let (names, witness, force): (&[&str], Option<usize>, bool) = match rng.weighted(&[25, 20, 10, 12, 8, 10, 15]) {
            0 => (&["a", "b", "c"], None, false),
            1 => (&["a", "b", "w"], Some(2), false),
            2 => (&["a", "b", "c", "d"], None, false),
            3 => (&["a", "b", "c", "d", "e"], None, false),
            4 => (&["a", "b", "c", "w"], Some(3), false),
            5 => (&["a", "b"], None, false),
            _ => (&["a", "b"], None, true),
        };
        let ttl = Duration::from_secs(rng.pick(&[1, 2, 3, 3]));
        let tenure = match bug {
            // The holder trusts its own clock: it times the full TTL, no margin.
            Some(Bug::IgnoreDrift) => Tenure { ttl, drift_ppm: 0, margin: Duration::ZERO },
            _ => Tenure::new(ttl),
        };
        let bound = i64::from(Tenure::DEFAULT_DRIFT_PPM);
        let clocks = names
            .iter()
            .map(|_| Clock {
                origin: rng.between(60 * SEC, 600 * SEC),
                skew_ppm: match rng.weighted(&[2, 2, 1]) {
                    0 => -bound,
                    1 => bound,
                    _ => rng.between(0, 2 * bound as u64) as i64 - bound,
                },
            })
            .collect();
        // A LAN, or links of a few to tens of milliseconds.
        let (low, high) = match rng.below(3) {
            0 => (rng.between(MS / 10, MS / 2), MS),
            _ => {
                let low = rng.between(MS / 5, 5 * MS);
                (low, rng.between(low + MS, 40 * MS))
            }
        };
        let heal_at = rng.between(45 * SEC, 120 * SEC);
        // Half the chains form while the run goes: a founder or a few
        // machines first, the rest joining (two voters forcing keep theirs).
        let founders =
            if force || rng.chance(500_000) { names.len() } else { 1 + rng.below(names.len() as u64 - 1) as usize };
        let mut at = rng.between(SEC, 10 * SEC);
        let joins = (founders..names.len())
            .map(|joiner| {
                let through = rng.below(joiner as u64) as usize;
                at += if rng.chance(400_000) { rng.below(100 * MS) } else { rng.between(SEC, 12 * SEC) };
                (joiner, through, at.min(heal_at - 5 * SEC))
            })
            .collect();
        let revocation = names.len() >= 4 && rng.chance(300_000);
        let disk_faults = bug == Some(Bug::SendBeforePersist) || rng.chance(400_000);
        let fault_gap = match rng.below(3) {
            0 => (5 * SEC, 15 * SEC),
            1 => (2 * SEC, 6 * SEC),
            _ => (SEC / 2, 2 * SEC),
        };
        let pool = rng.chance(400_000).then(|| names.iter().map(|_| rng.pick(&[1, 1, 2])).collect());
        Scenario {
            pool,
            names: names.iter().map(|n| n.to_string()).collect(),
            witness,
            tenure,
            handoff_timeout: Duration::from_secs(rng.pick(&[1, 2, 2])),
            clocks,
            heal_at,
            force,
            latency: (low, high),
            dup_ppm: rng.pick(&[0, 10_000, 50_000]),
            spike_ppm: rng.pick(&[0, 5_000, 20_000]),
            fault_gap,
            // Busy, or sparse enough that standbys are mostly caught up
            // and take a free lease without waiting for their logs.
            write_gap: match rng.below(3) {
                0 => (500 * MS, 3 * SEC),
                _ => (rng.between(50, 150) * MS, rng.between(200, 600) * MS),
            },
            stall_ppm: rng.pick(&[0, 200_000, 600_000]),
            retry_ppm: rng.pick(&[0, 20_000, 100_000]),
            founders,
            joins,
            revocation,
            disk_faults,
        }
    }

    pub fn voters(&self) -> usize {
        self.names.len()
    }

    /// Whether a holder is promised after the heal: a majority can form
    /// without any one machine (three voters or more, a witness counted).
    pub fn live(&self) -> bool {
        self.voters() >= 3
    }

    pub fn describe(&self) -> String {
        let mut s = format!("{} voters ({})", self.voters(), self.names.join(", "));
        if let Some(w) = self.witness {
            write!(s, ", {} a witness", self.names[w]).unwrap();
        }
        if self.force {
            s.push_str(", one crashes for good and the other forces");
        }
        if self.founders < self.voters() {
            write!(s, "; founded by {}", self.names[..self.founders].join(", ")).unwrap();
            for (joiner, through, at) in &self.joins {
                write!(
                    s,
                    ", {} joins through {} at {:.2} s",
                    self.names[*joiner],
                    self.names[*through],
                    *at as f64 / SEC as f64
                )
                .unwrap();
            }
        }
        if self.revocation {
            s.push_str("; one machine may be revoked");
        }
        if self.disk_faults {
            s.push_str("; disks fail and writes stall");
        }
        if let Some(capacities) = &self.pool {
            write!(s, "; the pool runs the topics (capacities {capacities:?}), moving them on request").unwrap();
        }
        write!(
            s,
            "; ttl {:?}, handoff timeout {:?}; clock skews {:?} ppm; latency {}–{} ms, dup {} ppm, spikes {} ppm; \
             faults every {}–{} s; heal at {} s",
            self.tenure.ttl,
            self.handoff_timeout,
            self.clocks.iter().map(|c| c.skew_ppm).collect::<Vec<_>>(),
            self.latency.0 as f64 / MS as f64,
            self.latency.1 / MS,
            self.dup_ppm,
            self.spike_ppm,
            self.fault_gap.0 as f64 / SEC as f64,
            self.fault_gap.1 as f64 / SEC as f64,
            self.heal_at as f64 / SEC as f64,
        )
        .unwrap();
        s
    }
}
