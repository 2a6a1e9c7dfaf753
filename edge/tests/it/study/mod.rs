//! The radiation study, shared by `tests/it/radiation_study.rs` (a quick run that checks the
//! targets) and `benches/radiation.rs` (the long run whose figures the README quotes).
//!
//! Occupancies come from the simulator's portal model (`simulate::occupancy`): Poisson counts,
//! 300 cps per detector, trucks of 10–18 m at 5–15 km/h shadowing 8–25 % of the background, a
//! point source passing the near detectors at 1.5 m, or NORM cargo raising the cargo's part by
//! 10–30 %. Each occupancy goes through the appliance's test (`gamma_test` with the default
//! budget) and the plain single-interval 4σ gross-count test, on the same counts.

pub mod families;

use acsgd::fusion::radiation::{gamma_test, plain_gross_test, INTERVAL_S};
use acsgd::fusion::settings::RadiationSettings;
use acsgd_testkit::simulate::{occupancy, Rng};

pub struct Row {
    pub label: String,
    pub n: usize,
    pub ours: usize,
    pub plain: usize,
    /// The plain test with its k set so that it, too, alarms on 1 in 1000 null occupancies.
    pub plain_calibrated: usize,
    z: Vec<f64>,
}

impl Row {
    pub fn ours_rate(&self) -> f64 {
        self.ours as f64 / self.n as f64
    }
    pub fn plain_rate(&self) -> f64 {
        self.plain as f64 / self.n as f64
    }
    pub fn plain_calibrated_rate(&self) -> f64 {
        self.plain_calibrated as f64 / self.n as f64
    }
}

fn row(label: String, n: usize, rng: &mut Rng, source: f64, norm: (f64, f64)) -> Row {
    let s = RadiationSettings::default();
    let mut r = Row {
        label,
        n,
        ours: 0,
        plain: 0,
        plain_calibrated: 0,
        z: Vec::with_capacity(n),
    };
    for _ in 0..n {
        let k = if norm.0 == norm.1 {
            norm.0
        } else {
            rng.range(norm.0, norm.1)
        };
        let o = occupancy(rng, source, k);
        // The simulator's background estimate is the mean of 60 one-second lines.
        if gamma_test(
            o.background,
            60.0,
            &o.gamma,
            s.window_s,
            s.gamma_false_alarms,
        )
        .alarm
        {
            r.ours += 1;
        }
        if plain_gross_test(o.background, &o.gamma) {
            r.plain += 1;
        }
        // The plain test's statistic: gross count in σ above background.
        let mu = o.background.iter().sum::<f64>() * o.gamma.len() as f64 * INTERVAL_S;
        let g: f64 = o
            .gamma
            .iter()
            .flat_map(|iv| iv.iter())
            .map(|&c| c as f64)
            .sum();
        r.z.push((g - mu) / mu.sqrt());
    }
    r
}

/// Null occupancies, NORM cargo, then each source strength (cps at 1.5 m).
pub fn run(
    seed: u64,
    null_n: usize,
    norm_n: usize,
    source_n: usize,
    strengths: &[f64],
) -> Vec<Row> {
    let mut rng = Rng::new(seed);
    let none = (1.0, 1.0);
    let mut rows = vec![row(
        "no source (false alarms)".into(),
        null_n,
        &mut rng,
        0.0,
        none,
    )];
    let norm = (1.10, 1.30);
    rows.push(row(
        "NORM cargo (+10 to +30 %)".into(),
        norm_n,
        &mut rng,
        0.0,
        norm,
    ));
    for &s in strengths {
        let label = format!("source {s:.0} cps at 1.5 m");
        rows.push(row(label, source_n, &mut rng, s, none));
    }
    // Calibrate the plain test on the null occupancies: its k is their 99.9th percentile.
    let mut z = rows[0].z.clone();
    z.sort_by(|a, b| a.total_cmp(b));
    let k = z[((z.len() as f64 * 0.999) as usize).min(z.len() - 1)];
    for r in &mut rows {
        r.plain_calibrated = r.z.iter().filter(|&&x| x > k).count();
    }
    rows
}

/// The calibrated plain test's k, in σ (negative: shadowing pulls the gross count below
/// background so far that even a threshold under the background alarms only 1 in 1000).
pub fn calibrated_k(rows: &[Row]) -> f64 {
    let mut z = rows[0].z.clone();
    z.sort_by(|a, b| a.total_cmp(b));
    z[((z.len() as f64 * 0.999) as usize).min(z.len() - 1)]
}

pub fn render(rows: &[Row]) -> String {
    let mut out = format!(
        "| occupancies | n | appliance | plain 4σ | plain, k = {:.2} σ (1 in 1000 null) |\n|---|---|---|---|---|\n",
        calibrated_k(rows)
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} ({:.4}) | {} ({:.4}) | {} ({:.4}) |\n",
            r.label,
            r.n,
            r.ours,
            r.ours_rate(),
            r.plain,
            r.plain_rate(),
            r.plain_calibrated,
            r.plain_calibrated_rate()
        ));
    }
    out
}
