//! Peak-sensitive EWMA of a backend's response latency (Finagle's and
//! Linkerd's "peak EWMA"): a sample above the average replaces it at once,
//! a sample below pulls it down with a weight that decays over
//! `ewma_decay`, and so does time without samples. A backend that turns
//! slow is seen slow at its first slow answer; one that recovers earns its
//! share back over the decay time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::clock::now_nanos;

/// One backend's latency estimate. Updates are lock-free and may lose a
/// sample to a concurrent one: it is an estimate.
#[derive(Debug, Default)]
pub struct PeakEwma {
    /// The average, in nanoseconds, as f64 bits.
    average: AtomicU64,
    /// When the last sample came, in [`now_nanos`] time.
    stamp: AtomicU64,
}

impl PeakEwma {
    /// Adds a response time.
    pub fn observe(&self, sample: Duration, decay: Duration) {
        let now = now_nanos();
        let last = self.stamp.swap(now, Relaxed);
        let average = f64::from_bits(self.average.load(Relaxed));
        let sample = sample.as_nanos() as f64;
        let next = if sample > average || last == 0 {
            sample
        } else {
            let elapsed = now.saturating_sub(last) as f64;
            let weight = (-elapsed / decay.as_nanos().max(1) as f64).exp();
            average * weight + sample * (1.0 - weight)
        };
        self.average.store(next.to_bits(), Relaxed);
    }

    /// The average response time in nanoseconds (0 before any sample).
    pub fn average(&self) -> f64 {
        f64::from_bits(self.average.load(Relaxed))
    }

    /// The average as it stands now, in nanoseconds: decayed toward 0 for
    /// the time since the last sample, as Finagle reads it. A backend that
    /// was slow and so stopped being picked looks cheaper as time passes,
    /// and is tried again to show whether it is still slow; with the
    /// undecayed average it would never get the request that shows it
    /// recovered. 0 before any sample.
    pub fn estimate(&self, decay: Duration) -> f64 {
        let average = self.average();
        if average == 0.0 {
            return 0.0;
        }
        let idle = now_nanos().saturating_sub(self.stamp.load(Relaxed)) as f64;
        average * (-idle / decay.as_nanos().max(1) as f64).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peak_replaces_the_average_and_recovery_decays() {
        let ewma = PeakEwma::default();
        let decay = Duration::from_millis(50);
        ewma.observe(Duration::from_millis(1), decay);
        ewma.observe(Duration::from_millis(100), decay);
        assert_eq!(ewma.average(), 100_000_000.0);
        std::thread::sleep(Duration::from_millis(100));
        ewma.observe(Duration::from_millis(1), decay);
        let average = ewma.average();
        assert!(average < 20_000_000.0, "{average}");
        assert!(average >= 1_000_000.0, "{average}");
    }

    #[test]
    fn an_estimate_fades_while_no_sample_comes() {
        let ewma = PeakEwma::default();
        let decay = Duration::from_millis(50);
        assert_eq!(ewma.estimate(decay), 0.0, "no sample yet");
        ewma.observe(Duration::from_millis(100), decay);
        let fresh = ewma.estimate(decay);
        assert!(fresh > 90_000_000.0, "{fresh}");
        std::thread::sleep(Duration::from_millis(200));
        let faded = ewma.estimate(decay);
        assert!(faded < 5_000_000.0, "{faded}");
        assert_eq!(ewma.average(), 100_000_000.0, "reading changes nothing");
    }

    #[test]
    fn a_fast_answer_right_after_a_slow_one_barely_moves_the_average() {
        let ewma = PeakEwma::default();
        // An hour's decay: the microseconds between two samples weigh nothing.
        let decay = Duration::from_secs(3600);
        ewma.observe(Duration::from_millis(100), decay);
        for _ in 0..10 {
            ewma.observe(Duration::from_millis(1), decay);
        }
        let average = ewma.average();
        assert!(
            average > 99_000_000.0 && average <= 100_000_000.0,
            "{average}"
        );
        // A slower answer still replaces it at once.
        ewma.observe(Duration::from_millis(150), decay);
        assert_eq!(ewma.average(), 150_000_000.0);
    }
}
