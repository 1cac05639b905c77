//! Zipf-distributed key indexes, as YCSB draws them (Gray et al., "Quickly generating
//! billion-record synthetic databases", SIGMOD 1994): a few keys are hot, most are cold.
//! Setup sums `n` terms once (about a second for 100 million keys); each draw is O(1).

use rand::Rng;

/// YCSB's default skew: the most popular key draws about 1/ζ(n) of all requests.
pub const THETA: f64 = 0.99;

#[derive(Debug, Clone)]
pub struct Zipf {
    n: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipf {
    pub fn new(n: u64, theta: f64) -> Zipf {
        assert!(n >= 1 && theta > 0.0 && theta < 1.0);
        let zeta_n = zeta(n, theta);
        let zeta_2 = zeta(2.min(n), theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n);
        Zipf {
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_n,
            eta,
        }
    }

    /// A key index in `0..n`; 0 is the most popular.
    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let index = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        index.min(self.n - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_in_range_and_favour_low_indexes() {
        let zipf = Zipf::new(1000, THETA);
        let mut rng = rand::rng();
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[zipf.sample(&mut rng) as usize] += 1;
        }
        // Key 0 is drawn about 1/ζ(1000) ≈ 13% of the time; key 999 hardly ever.
        assert!(counts[0] > 10_000 && counts[0] < 16_000, "{}", counts[0]);
        assert!(counts[0] > counts[1] && counts[1] > counts[10]);
        assert!(counts[999] < 100);
        assert_eq!(Zipf::new(1, THETA).sample(&mut rng), 0);
    }
}
