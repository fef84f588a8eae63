//! How long a confirmed lease lets its holder act, on the holder's own clock.

use std::time::Duration;

/// Lease timing. The holder counts from when it *sent* the request a
/// majority accepted; each voter counts `ttl` from when it *received* it, on
/// its own clock. Clocks may run at rates differing by up to `drift_ppm`
/// parts per million, so the holder shortens its lease by that bound (twice:
/// its clock may be slow while a voter's is fast) and by a fixed `margin` for
/// the time between checking the lease and acting. Wall-clock time is never
/// used, so skew between machines' calendars does not matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenure {
    pub ttl: Duration,
    pub drift_ppm: u32,
    pub margin: Duration,
}

impl Tenure {
    pub const DEFAULT_TTL: Duration = Duration::from_secs(3);
    /// 1 %: far beyond any working quartz clock (about 0.01 %).
    pub const DEFAULT_DRIFT_PPM: u32 = 10_000;

    /// The default margin: 2 % of the TTL, at least 20 ms.
    pub fn new(ttl: Duration) -> Tenure {
        Tenure { ttl, drift_ppm: Tenure::DEFAULT_DRIFT_PPM, margin: (ttl / 50).max(Duration::from_millis(20)) }
    }

    /// How long after sending an accepted request the holder may act.
    pub fn valid_for(&self) -> Duration {
        let scaled =
            self.ttl.as_nanos() * u128::from(1_000_000 - self.drift_ppm) / u128::from(1_000_000 + self.drift_ppm);
        Duration::from_nanos(scaled as u64).saturating_sub(self.margin)
    }

    /// How often the holder renews: three chances before its lease runs out.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// How often an unanswered lease message (a prepare, a proposal, a
    /// release, a yield) is repeated: several times within an attempt, which
    /// gives up after half a TTL.
    pub fn resend_every(&self) -> Duration {
        self.ttl / 12
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_stops_before_any_voter_could_let_go() {
        let t = Tenure::new(Duration::from_secs(3));
        // Holder's clock slow by the bound, voter's fast by the bound: the
        // holder's local lease, in true time, still ends before the voter's.
        let holder_true = t.valid_for().as_secs_f64() / (1.0 - 0.01);
        let voter_true = t.ttl.as_secs_f64() / (1.0 + 0.01);
        assert!(holder_true < voter_true, "{holder_true} < {voter_true}");
        assert!(t.renew_every() * 2 < t.valid_for(), "two renewals may fail before the lease ends");
    }
}
