//! The soak's figures in the suite's results format (`benches/support/results.rs`): every
//! sample's RSS over time, then the run's summary with the limits the soak judges as targets.
//! It measures nothing and judges nothing itself.

use std::time::Duration;

use super::results::{Better, Measurement, Series};
use super::{FD_LIMIT, RSS_LIMIT, Sample, THREAD_LIMIT, WAL_LIMIT};

/// What the soak writes to the suite's results: every sample's RSS, and the run's summary.
pub(crate) struct Figures {
    /// From the service's exec to the start of the load (samples count from the latter).
    pub(crate) since_spawn: Duration,
    /// Every sample, the one after the heal last.
    pub(crate) samples: Vec<Sample>,
    pub(crate) load_secs: f64,
    pub(crate) acknowledged: usize,
    pub(crate) lost: usize,
    pub(crate) dead: u64,
    pub(crate) server_errors: u64,
    pub(crate) drained_in: Duration,
    /// Early and late medians: KiB, descriptors, threads, KiB, KiB.
    pub(crate) rss: (f64, f64),
    pub(crate) fds: (f64, f64),
    pub(crate) threads: (f64, f64),
    pub(crate) wal: (f64, f64),
    pub(crate) db: (f64, f64),
}

impl Figures {
    /// The suite's measurements (area and scenario `soak`): `rss` per sample with `t_s`, then
    /// the summary, each growth figure with its limit as the target.
    pub(crate) fn measurements(&self) -> Vec<Measurement> {
        let figure = |name: &str, unit: &str, better: Better| {
            Measurement::new("soak", "soak", name, unit, better)
        };
        let mib = |kib: f64| kib / 1024.0;
        let mut out: Vec<Measurement> = self
            .samples
            .iter()
            .map(|s| {
                let t_s = (self.since_spawn + s.at).as_secs_f64();
                figure("rss", "MiB", Better::Lower)
                    .param("t_s", (t_s * 10.0).round() / 10.0)
                    .runs([mib(s.rss_kib as f64)])
            })
            .collect();
        let mut with_target = |m: Measurement, value: f64, target: f64| {
            out.push(m.clone().series(Series::Target).runs([target]));
            out.push(m.runs([value]));
        };
        with_target(
            figure("lost", "events", Better::Lower),
            self.lost as f64,
            0.0,
        );
        with_target(figure("dead", "rows", Better::Lower), self.dead as f64, 0.0);
        with_target(
            figure("server errors", "requests", Better::Lower),
            self.server_errors as f64,
            0.0,
        );
        let (early, late) = self.rss;
        with_target(
            figure("rss growth", "MiB", Better::Lower),
            mib(late - early),
            mib((RSS_LIMIT.bound)(early) - early),
        );
        let (early, late) = self.fds;
        with_target(
            figure("descriptor growth", "descriptors", Better::Lower),
            late - early,
            (FD_LIMIT.bound)(early) - early,
        );
        let (early, late) = self.threads;
        with_target(
            figure("thread growth", "threads", Better::Lower),
            late - early,
            (THREAD_LIMIT.bound)(early) - early,
        );
        let (early, late) = self.wal;
        with_target(
            figure("wal late", "MiB", Better::Lower),
            mib(late),
            mib((WAL_LIMIT.bound)(early)),
        );
        let plain = [
            (
                "acknowledged",
                "events",
                Better::Higher,
                self.acknowledged as f64,
            ),
            (
                "delivered",
                "events",
                Better::Higher,
                (self.acknowledged - self.lost) as f64,
            ),
            (
                "load",
                "events/s",
                Better::Higher,
                self.acknowledged as f64 / self.load_secs,
            ),
            ("load time", "s", Better::Higher, self.load_secs),
            ("rss early", "MiB", Better::Lower, mib(self.rss.0)),
            ("rss late", "MiB", Better::Lower, mib(self.rss.1)),
            (
                "rss peak",
                "MiB",
                Better::Lower,
                mib(self.samples.iter().map(|s| s.rss_kib).max().unwrap_or(0) as f64),
            ),
            ("db late", "MiB", Better::Lower, mib(self.db.1)),
            (
                "queue empty after heal",
                "s",
                Better::Lower,
                self.drained_in.as_secs_f64(),
            ),
        ];
        for (name, unit, better, value) in plain {
            out.push(figure(name, unit, better).runs([value]));
        }
        out
    }
}
