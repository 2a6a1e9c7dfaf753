//! The appliance's own radiation alarm, from the portal's raw counts.
//!
//! The portal reports background (`GB`/`NB`: counts per second per detector, lane empty) and,
//! while occupied, scan intervals (`GS`/`NS`, `GA`/`NA` when the portal itself alarms: counts
//! per 200 ms per detector). For each occupancy:
//!
//! **Gamma.** Background per detector is the mean of the background lines of the
//! `background_s` before the occupancy. A passing vehicle *shadows* the detectors (its mass
//! absorbs part of the natural background, 4–25 %), in the shape of the vehicle: deeper under
//! a loaded trailer, not at all in the gap behind the cab, more on the side it passes closer
//! to. Any attempt to model that shape from the occupancy itself mistakes the gap for a source
//! (the radiation study's cab-and-trailer family alarmed on 27 % of clean occupancies when the
//! expectation was the occupancy's median). Two things hold for every shadow, and each gives
//! tests (all in sliding windows of 1 and 2 × `window_s`):
//!
//! * **It only removes counts.** Each side of the lane and their sum are held against a
//!   ceiling that never goes below the background: the background, or the occupancy's own
//!   level where that is higher (its 60th percentile interval, up to [`NORM_MAX`]: a uniformly
//!   raised cargo or a background that rose since it was measured). A source passing in deep
//!   shadow can hide under the background it removed; that is the price of never alarming on
//!   a vehicle's shape.
//! * **It moves both sides of the lane together**, or nearly: a vehicle off-centre shadows
//!   the near side more, in proportion to its depth. A point source near one pillar raises
//!   that side and hardly the other. Each window's split between the sides is compared with
//!   the rest of the occupancy's split *and* with the background's, widened by what the
//!   window's shadow depth can do to it ([`SPLIT_SHADOW_SLOPE`]), each as a 2 × 2 table (the
//!   signed root of its likelihood-ratio statistic); it alarms only when it differs from both,
//!   so neither the gap behind the cab of a vehicle driving off-centre (its split returns to
//!   the background's there) nor its deeper cab is a source.
//!
//! **Thresholds from the budget.** The six tests (sides, sum, split; two window lengths) share
//! `gamma_false_alarms`, the sum most, the split least ([`TESTS`]), their shares adding up to
//! [`SHARES_TOTAL`] times it because they overlap. Within one test, overlapping windows are
//! strongly correlated,
//! so counting every window position as an independent test (Bonferroni) spends the budget
//! several times over on nothing: the number of independent tests is taken as
//! [`EFFECTIVE_CEILING`] or [`EFFECTIVE_SPLIT`] per window length of occupancy, upper bounds
//! measured on flat Poisson occupancies (no shadow, the ceiling's worst case) of 3–30 s. The
//! radiation study validates the result on null occupancies of every model family
//! (`edge/tests/it/study/`).
//!
//! **Neutron.** The summed neutron channel over the whole occupancy and in every window,
//! against the neutron background (no shadow correction: neutron background comes from cosmic
//! rays and heavy vehicles raise rather than lower it), with `neutron_false_alarms` shared
//! the same way.
//!
//! The portal's own alarm (`GA`/`NA` lines) is reported beside ours, never instead of it.
//! [`plain_gross_test`] is the reference the radiation study compares with: one gross count of
//! the whole occupancy against background + 4σ.

/// Seconds per scan interval.
pub const INTERVAL_S: f64 = 0.2;

/// How far above background the occupancy's own level may lift the expected count. A
/// uniformly raised cargo (NORM: ceramics, fertiliser, granite) is benign and not what a
/// gross-count portal can tell apart from anything else, so up to +50 % the expectation
/// follows it instead of alarming; beyond that it stops following and the windows alarm.
pub const NORM_MAX: f64 = 1.5;

/// The quantile of the occupancy's intervals whose level the ceiling follows above the
/// background. The median follows a raised cargo that fills most of the occupancy; a little
/// above it, one that fills only its middle as well (in the study's families, NORM alarms
/// about a third fewer at 0.55 than with the median, and another third fewer at 0.6, which
/// leaves room for [`SHARES_TOTAL`]), at the cost of a little detection in short occupancies,
/// where a source fills a larger part.
pub const LEVEL_QUANTILE: f64 = 0.6;

/// Independent tests per window length of occupancy, for the tests against the ceiling: the
/// largest measured on flat Poisson occupancies of 3–30 s was 0.95 (side channels, 1 s), so
/// this bound keeps a margin.
pub const EFFECTIVE_CEILING: f64 = 1.2;

/// The same for the split between the sides, whose windows decorrelate faster (the largest
/// measured: 2.3, 2 s windows in 30 s occupancies).
pub const EFFECTIVE_SPLIT: f64 = 2.5;

/// How far a shadow may move the split between the sides from the background's, per unit of
/// shadow depth (in the logarithm of the split). A vehicle nearer pillar A shadows A by `d`
/// and B by `f·d`, which moves the split by `(1 − f)·d` while the summed level drops by
/// `(1 + f)/2·d`: a slope of `2(1 − f)/(1 + f)`, at most 1 while the far side gets at least a
/// third of the near side's shadow. Within that band the split is the vehicle's, not a
/// source's: a short deep cab of an off-centre truck differs from both its trailer's split
/// and the background's (the study's off-centre cab-and-trailer family alarmed at 4.6 × 10⁻⁴
/// per occupancy without it, 2 in 50 000 with it).
pub const SPLIT_SHADOW_SLOPE: f64 = 1.0;

/// What the gamma test found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GammaResult {
    pub alarm: bool,
    /// The test that alarmed first (`side_a`, `side_b`, `sum`: against the ceiling;
    /// `side_a_over_b`, `side_b_over_a`: the split between the sides).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<&'static str>,
    /// Summed background, counts per second.
    pub background_cps: f64,
    /// The occupancy's median level over background (below 1: shadowing; above: a raised
    /// cargo or background).
    pub shadow: f64,
    /// The summed channel's alarm threshold in the `window_s` window, counts per second.
    pub threshold_cps: f64,
    /// The summed channel's highest `window_s` window, counts per second.
    pub max_cps: f64,
    /// The largest statistic over its threshold among all tests (1 or more: alarm).
    pub peak_ratio: f64,
}

/// What the neutron test found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NeutronResult {
    pub alarm: bool,
    pub background_cps: f64,
    /// Counts of the whole occupancy and the threshold they were held against.
    pub counts: u64,
    pub threshold: u64,
}

/// The channels held against the ceiling: each side of the lane (a source near one pillar
/// shows there over half the background) and the sum (a centred source).
const CHANNELS: [&str; 3] = ["side_a", "side_b", "sum"];

/// The channels of four detector values.
fn channel_values<T: Copy + std::ops::Add<Output = T>>(c: [T; 4]) -> [T; 3] {
    [c[0] + c[1], c[2] + c[3], c[0] + c[1] + c[2] + c[3]]
}

/// The gamma tests; [`TESTS`] gives each its share of the budget.
#[derive(Clone, Copy, PartialEq)]
enum Test {
    /// Each side against its ceiling.
    Sides,
    /// The sum against its ceiling.
    Sum,
    /// The split between the sides against the rest's and the background's.
    Split,
}

/// The tests and their window lengths, as multiples of `window_s`: a source that passes
/// quickly stands out best in a short window, a slow one in a long one. (Windows of 0.4 s
/// added a test's worth of multiplicity and found fewer sources in the study.)
///
/// The third number is the test's weight in the budget: the sum is the one test that sees a
/// centred source (it is seen at about half the rate on each side, where the sides' tests lose
/// it in their own noise), while a source near a pillar is seen by both the sides' tests and
/// the split, so the sum gets the largest share and the split the smallest (in the study, the
/// sum's double share found a centred source about a tenth more often and a source near a
/// pillar as often as equal shares did).
const TESTS: [(Test, f64, f64); 6] = [
    (Test::Sides, 1.0, 1.0),
    (Test::Sides, 2.0, 1.0),
    (Test::Sum, 1.0, 2.0),
    (Test::Sum, 2.0, 2.0),
    (Test::Split, 1.0, 0.5),
    (Test::Split, 2.0, 0.5),
];

/// How much of the budget the tests' shares add up to. The six tests look at the same counts
/// (the sum is the sides together, the 2 s windows hold the 1 s ones), so a false alarm of one
/// is often a false alarm of another, and [`EFFECTIVE_CEILING`] and [`EFFECTIVE_SPLIT`] are
/// upper bounds: flat Poisson occupancies (no shadow, the ceiling's worst case) alarm at about
/// a tenth of what the shares add up to (the study's no-shadow family: 20 in 200 000, 1.0 ×
/// 10⁻⁴, with shares adding up to 10⁻³; `ACSGD_STUDY_NULL=800000 cargo bench -p acsgd --bench
/// radiation`). At twice the budget, the family that takes the most is the drifting
/// background (53 in 200 000, 2.6 × 10⁻⁴, its 95 % bound 3.5 × 10⁻⁴); flat occupancies of
/// 10–60 s, 50–1 500 cps, or with 10 s of background lines stayed at or below 2 × 10⁻⁴
/// (100 000 each).
pub const SHARES_TOTAL: f64 = 2.0;

/// Window length in whole intervals.
fn window_intervals(window_s: f64, n: usize) -> usize {
    (((window_s / INTERVAL_S).round() as usize).max(1)).min(n.max(1))
}

/// Sliding window sums of each detector.
fn window_sums(intervals: &[[u32; 4]], w: usize) -> Vec<[u64; 4]> {
    if intervals.len() < w || w == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(intervals.len() - w + 1);
    let mut acc = [0u64; 4];
    for (i, iv) in intervals.iter().enumerate() {
        for d in 0..4 {
            acc[d] += iv[d] as u64;
        }
        if i >= w {
            for d in 0..4 {
                acc[d] -= intervals[i - w][d] as u64;
            }
        }
        if i + 1 >= w {
            out.push(acc);
        }
    }
    out
}

/// The `q` quantile of `v` (nearest rank), and the median for `q = 0.5` of an even count.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    if q == 0.5 && v.len() % 2 == 0 {
        let m = v.len() / 2;
        return (v[m - 1] + v[m]) / 2.0;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The signed root of the Poisson deviance of `x` counts against a mean `mu`: close to a
/// standard normal variable far into its tail even at a few dozen counts (a Gaussian `(x −
/// μ)/√μ` is not: its upper tail is several times too heavy at 4–5 σ). Divided by the
/// inflation that an expectation known only to `rel` brings.
pub fn poisson_z(x: f64, mu: f64, rel: f64) -> f64 {
    if mu <= 0.0 {
        return 0.0;
    }
    let d = if x > 0.0 {
        2.0 * (x * (x / mu).ln() - (x - mu))
    } else {
        2.0 * mu
    };
    let s = d.max(0.0).sqrt() * if x >= mu { 1.0 } else { -1.0 };
    s / (1.0 + rel * rel * mu).sqrt()
}

/// The signed root of the likelihood-ratio (G) statistic of the 2 × 2 table `[[a, b], [c,
/// d]]`: does the split `a : b` differ from `c : d`? Positive when `a/b > c/d`; both rows'
/// counts are random, so the reference split's own uncertainty is in it. Its tails follow the
/// normal one far better than a Wald difference does (measured on flat occupancies: 1.5–2
/// times the normal tail at 4.5 σ).
pub fn split_z(a: f64, b: f64, c: f64, d: f64) -> f64 {
    if a + b <= 0.0 || c + d <= 0.0 || a + c <= 0.0 || b + d <= 0.0 {
        return 0.0;
    }
    let xlx = |x: f64| if x > 0.0 { x * x.ln() } else { 0.0 };
    let n = a + b + c + d;
    let g = 2.0
        * (xlx(a) + xlx(b) + xlx(c) + xlx(d) - xlx(a + b) - xlx(c + d) - xlx(a + c) - xlx(b + d)
            + xlx(n));
    let s = g.max(0.0).sqrt();
    if a * d >= b * c {
        s
    } else {
        -s
    }
}

/// The gamma test of one occupancy. `background` is counts per second per detector, the
/// mean of `background_s` seconds of background lines.
pub fn gamma_test(
    background: [f64; 4],
    background_s: f64,
    intervals: &[[u32; 4]],
    window_s: f64,
    false_alarms: f64,
) -> GammaResult {
    let bg_sum: f64 = background.iter().sum();
    let n = intervals.len();
    let mut result = GammaResult {
        alarm: false,
        channel: None,
        background_cps: bg_sum,
        shadow: 1.0,
        threshold_cps: f64::NAN,
        max_cps: 0.0,
        peak_ratio: 0.0,
    };
    if n == 0 || bg_sum <= 0.0 {
        return result;
    }
    let bg3 = channel_values(background);
    let series: Vec<[f64; 3]> = intervals
        .iter()
        .map(|iv| channel_values(iv.map(f64::from)))
        .collect();
    // Each channel's level over the background, and what the ceiling follows: its
    // LEVEL_QUANTILE interval (known to ≈ 1.25 σ/√n), from 1 up to NORM_MAX. The background
    // itself is known to its counting error.
    let mut ceiling = [(1.0f64, 0.0f64); 3];
    for c in 0..3 {
        let per_interval = bg3[c] * INTERVAL_S;
        if per_interval <= 0.0 {
            continue;
        }
        let mut v: Vec<f64> = series.iter().map(|x| x[c]).collect();
        let level = quantile(&mut v, LEVEL_QUANTILE) / per_interval;
        if c == 2 {
            result.shadow = quantile(&mut v, 0.5) / per_interval;
        }
        let level_rel = 1.25 / (per_interval * level.max(0.01) * n as f64).sqrt();
        let bg_rel = 1.0 / (bg3[c] * background_s.max(1.0)).sqrt();
        let rel = if level > 1.0 {
            bg_rel.hypot(level_rel)
        } else {
            bg_rel
        };
        ceiling[c] = (level.clamp(1.0, NORM_MAX), rel);
    }
    // The split's background row: the counts the background estimate was made of.
    let bg_split = (bg3[0] * background_s, bg3[1] * background_s);
    let total = (
        series.iter().map(|x| x[0]).sum::<f64>(),
        series.iter().map(|x| x[1]).sum::<f64>(),
    );
    // A short occupancy may make both window lengths one: that test then has both shares.
    let mut widths: Vec<(Test, usize, f64)> = Vec::with_capacity(TESTS.len());
    for &(t, f, weight) in &TESTS {
        let w = window_intervals(window_s * f, n);
        match widths.last_mut() {
            Some(last) if last.0 == t && last.1 == w => last.2 += weight,
            _ => widths.push((t, w, weight)),
        }
    }
    let weights: f64 = TESTS.iter().map(|t| t.2).sum();
    let middle = window_intervals(window_s, n);
    for (test, w, weight) in widths {
        let share = false_alarms * SHARES_TOTAL * weight / weights;
        let positions = (n + 1 - w) as f64;
        let (directions, per_window) = match test {
            Test::Sides => (2.0, EFFECTIVE_CEILING),
            Test::Sum => (1.0, EFFECTIVE_CEILING),
            Test::Split => (2.0, EFFECTIVE_SPLIT),
        };
        let tests = (directions * positions * (per_window / w as f64).min(1.0)).max(1.0);
        let z = normal_quantile(1.0 - share / tests);
        let window_t = w as f64 * INTERVAL_S;
        if test == Test::Sum && w == middle {
            let (level, rel) = ceiling[2];
            let mu = bg3[2] * level * window_t;
            result.threshold_cps = (mu + z * (mu * (1.0 + rel * rel * mu)).sqrt()) / window_t;
        }
        for s in window_sums(intervals, w) {
            let v = channel_values(s.map(|x| x as f64));
            if test == Test::Sum && w == middle {
                result.max_cps = result.max_cps.max(v[2] / window_t);
            }
            let found = |stat: f64, name: &'static str, result: &mut GammaResult| {
                let ratio = stat / z;
                result.peak_ratio = result.peak_ratio.max(ratio);
                if ratio >= 1.0 && !result.alarm {
                    result.alarm = true;
                    result.channel = Some(name);
                }
            };
            match test {
                Test::Sides | Test::Sum => {
                    let channels: &[usize] = if test == Test::Sum { &[2] } else { &[0, 1] };
                    for &c in channels {
                        let (level, rel) = ceiling[c];
                        let stat = poisson_z(v[c], bg3[c] * level * window_t, rel);
                        found(stat, CHANNELS[c], &mut result);
                    }
                }
                Test::Split => {
                    let (a, b) = (v[0], v[1]);
                    let rest = split_z(a, b, total.0 - a, total.1 - b);
                    // Under a shadow, the background's split widens by up to
                    // SPLIT_SHADOW_SLOPE × the window's shadow depth either way.
                    let depth = 1.0 - (a + b) / ((bg3[0] + bg3[1]) * window_t);
                    let band = (SPLIT_SHADOW_SLOPE * depth.max(0.0)).exp();
                    let bg_a = split_z(a, b, bg_split.0 * band, bg_split.1);
                    let bg_b = split_z(a, b, bg_split.0, bg_split.1 * band);
                    // Side A high only if high against both references; side B likewise.
                    found(rest.min(bg_a), "side_a_over_b", &mut result);
                    found(-rest.max(bg_b), "side_b_over_a", &mut result);
                }
            }
        }
    }
    result
}

/// The neutron test of one occupancy. `background_cps` is the summed neutron background.
pub fn neutron_test(
    background_cps: f64,
    intervals: &[[u32; 4]],
    window_s: f64,
    false_alarms: f64,
) -> NeutronResult {
    let counts: u64 = intervals
        .iter()
        .map(|iv| iv.iter().map(|&c| c as u64).sum::<u64>())
        .sum();
    let mut r = NeutronResult {
        alarm: false,
        background_cps,
        counts,
        threshold: 0,
    };
    if intervals.is_empty() {
        return r;
    }
    // A portal that reports no neutron background still has some: one count a minute keeps
    // the test meaningful instead of alarming on the first neutron.
    let bg = background_cps.max(1.0 / 60.0);
    let w = window_intervals(window_s, intervals.len());
    let sums = window_sums(intervals, w);
    let alpha = false_alarms / (1 + sums.len()) as f64;
    r.threshold = poisson_threshold(bg * intervals.len() as f64 * INTERVAL_S, alpha);
    let tw = poisson_threshold(bg * w as f64 * INTERVAL_S, alpha);
    r.alarm = counts >= r.threshold || sums.iter().any(|s| s.iter().sum::<u64>() >= tw);
    r
}

/// The reference: the whole occupancy's gross gamma count against background + 4σ.
pub fn plain_gross_test(background: [f64; 4], intervals: &[[u32; 4]]) -> bool {
    let mu = background.iter().sum::<f64>() * intervals.len() as f64 * INTERVAL_S;
    let g: u64 = intervals
        .iter()
        .map(|iv| iv.iter().map(|&c| c as u64).sum::<u64>())
        .sum();
    !intervals.is_empty() && g as f64 > mu + 4.0 * mu.sqrt()
}

/// `ln k!`.
pub fn ln_factorial(k: u64) -> f64 {
    if k < 64 {
        (2..=k).map(|i| (i as f64).ln()).sum()
    } else {
        let n = k as f64;
        n * n.ln() - n + 0.5 * (2.0 * std::f64::consts::PI * n).ln() + 1.0 / (12.0 * n)
            - 1.0 / (360.0 * n.powi(3))
    }
}

/// `P(X ≥ t)` for `X ~ Poisson(mu)`, for `t ≥ mu` (the only side a threshold lives on).
pub fn poisson_upper_tail(mu: f64, t: u64) -> f64 {
    if t == 0 {
        return 1.0;
    }
    let mut term = (t as f64 * mu.ln() - mu - ln_factorial(t)).exp();
    let mut sum = 0.0;
    let mut k = t;
    while term > sum * 1e-16 && k < t + 100_000 {
        sum += term;
        k += 1;
        term *= mu / k as f64;
    }
    sum.min(1.0)
}

/// The smallest count `t` with `P(X ≥ t) ≤ alpha` for `X ~ Poisson(mu)`.
///
/// Starts from the Wilson–Hilferty approximation and steps to the exact boundary: two or
/// three tail sums instead of a bisection's dozen (this runs for every channel of every
/// occupancy).
pub fn poisson_threshold(mu: f64, alpha: f64) -> u64 {
    let floor = mu.ceil().max(1.0) as u64;
    let z = normal_quantile(1.0 - alpha.clamp(1e-300, 0.5));
    // X ≥ t ⇔ X + 1 > t: Wilson–Hilferty for the Poisson upper quantile.
    let a = mu + 1.0;
    let guess = a * (1.0 - 1.0 / (9.0 * a) + z / (3.0 * a.sqrt())).powi(3);
    let mut t = (guess.ceil() as u64).max(floor);
    if poisson_upper_tail(mu, t) <= alpha {
        while t > floor && poisson_upper_tail(mu, t - 1) <= alpha {
            t -= 1;
        }
    } else {
        while poisson_upper_tail(mu, t) > alpha {
            t += 1;
        }
    }
    t
}

/// The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
#[allow(clippy::excessive_precision)] // Acklam's published coefficients, as published
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383577518672690e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_tail_matches_known_values() {
        // P(X ≥ 5 | μ = 1) = 1 − Σ_{k<5} e⁻¹/k! = 0.0036599…
        assert!((poisson_upper_tail(1.0, 5) - 0.003_659_846_8).abs() < 1e-9);
        // P(X ≥ 20 | μ = 10) = 0.003454…
        assert!((poisson_upper_tail(10.0, 20) - 0.003_454_6).abs() < 1e-6);
        // Large μ: close to the normal tail at 4σ (3.2e-5), a little heavier.
        let t = poisson_upper_tail(10_000.0, 10_400);
        assert!(t > 3.0e-5 && t < 5.0e-5, "{t}");
    }

    #[test]
    fn normal_quantiles() {
        assert!((normal_quantile(0.975) - 1.959_963_985).abs() < 1e-8);
        assert!((normal_quantile(1.0 - 3.167e-5) - 4.0).abs() < 1e-3);
        assert!((normal_quantile(0.5)).abs() < 1e-12);
    }

    #[test]
    fn threshold_is_the_smallest_count_within_alpha() {
        for (mu, alpha) in [
            (1.0, 1e-3),
            (50.0, 1e-5),
            (1200.0, 2e-6),
            (0.02, 1e-4),
            (300.0, 0.4),
            (8.0, 1e-12),
        ] {
            let t = poisson_threshold(mu, alpha);
            assert!(poisson_upper_tail(mu, t) <= alpha, "{mu} {alpha} {t}");
            assert!(
                t == 1 || poisson_upper_tail(mu, t - 1) > alpha,
                "{mu} {alpha} {t}"
            );
        }
    }

    #[test]
    fn flat_background_is_clear_and_a_peak_alarms() {
        let bg = [300.0; 4];
        let flat: Vec<[u32; 4]> = (0..30).map(|i| [60 + i % 3, 59, 61, 60]).collect();
        let r = gamma_test(bg, 60.0, &flat, 1.0, 5e-4);
        assert!(!r.alarm, "{r:?}");
        assert!((r.shadow - 1.0).abs() < 0.02);
        let mut peak = flat.clone();
        for iv in &mut peak[12..17] {
            iv[0] += 25;
            iv[1] += 20;
        }
        let r = gamma_test(bg, 60.0, &peak, 1.0, 5e-4);
        assert!(r.alarm, "{r:?}");
        assert!(
            matches!(r.channel, Some("side_a" | "side_a_over_b")),
            "{r:?}"
        );
        // The same counts spread over the whole occupancy hide in the plain gross test.
        assert!(!plain_gross_test(bg, &peak));
    }

    #[test]
    fn shadowing_is_estimated_from_the_occupancy() {
        let bg = [300.0; 4];
        let shadowed: Vec<[u32; 4]> = (0..40).map(|_| [48, 48, 48, 48]).collect();
        let r = gamma_test(bg, 60.0, &shadowed, 1.0, 5e-4);
        assert!((r.shadow - 0.8).abs() < 1e-9, "{r:?}");
        assert!(!r.alarm);
    }

    #[test]
    fn poisson_z_follows_the_normal_tail() {
        // At the exact Poisson count for a tail of 1e-6 the deviance's root reads close to
        // the normal quantile of 1e-6 (4.75), from a few dozen counts to thousands; the
        // Gaussian (x − μ)/√μ overshoots at low counts.
        let z = normal_quantile(1.0 - 1e-6);
        for mu in [30.0, 300.0, 3000.0] {
            let t = poisson_threshold(mu, 1e-6) as f64;
            let r = poisson_z(t, mu, 0.0);
            assert!((r - z).abs() < 0.15, "{mu}: {r} against {z}");
        }
        assert!(poisson_z(30.0, 30.0, 0.0).abs() < 1e-12);
        assert!(poisson_z(10.0, 30.0, 0.0) < -3.0);
        // An expectation known to 10 % of 3000 counts: the excess counts far less.
        assert!(poisson_z(3300.0, 3000.0, 0.1) < 0.4 * poisson_z(3300.0, 3000.0, 0.0));
    }

    #[test]
    fn split_z_is_signed_and_zero_for_the_same_split() {
        assert!(split_z(100.0, 200.0, 1000.0, 2000.0).abs() < 1e-4);
        let up = split_z(160.0, 100.0, 1000.0, 1000.0);
        assert!(up > 3.0, "{up}");
        assert!((split_z(100.0, 160.0, 1000.0, 1000.0) + up).abs() < 1e-9);
        // The reference row's own uncertainty counts: a reference of few counts says less.
        assert!(split_z(160.0, 100.0, 100.0, 100.0) < up);
        assert_eq!(split_z(0.0, 0.0, 10.0, 10.0), 0.0);
    }

    /// Expected counts (no noise) of an occupancy of `n` intervals at 300 cps per detector,
    /// each side shadowed by the given fraction per interval, plus extra counts on side A.
    fn shaped(
        n: usize,
        shadow: impl Fn(usize) -> (f64, f64),
        extra_a: impl Fn(usize) -> f64,
    ) -> Vec<[u32; 4]> {
        (0..n)
            .map(|i| {
                let (sa, sb) = shadow(i);
                let a = 60.0 * (1.0 - sa) + extra_a(i) / 2.0;
                let b = 60.0 * (1.0 - sb);
                [
                    a.round() as u32,
                    a.round() as u32,
                    b.round() as u32,
                    b.round() as u32,
                ]
            })
            .collect()
    }

    #[test]
    fn a_gap_in_an_off_centre_vehicle_is_not_a_source_but_a_source_there_is() {
        let bg = [300.0; 4];
        // 9 s, much closer to side B (25 % shadow there, 5 % on A), the gap behind the cab
        // (intervals 12–21) unshadowed on both: its split is the background's, far from the
        // rest's (tested against the rest alone, it alarms at 5.8 σ).
        let off_centre = |i: usize| {
            if (12..22).contains(&i) {
                (0.0, 0.0)
            } else {
                (0.05, 0.25)
            }
        };
        let clean = shaped(45, off_centre, |_| 0.0);
        let r = gamma_test(bg, 60.0, &clean, 1.0, 5e-4);
        assert!(!r.alarm, "{r:?}");
        // A source near pillar A passing under the trailer of a vehicle closer to B (12.5 %
        // and 25 %) over 2 s, 125 cps on that side: still under the background there, so only
        // the split between the sides sees it.
        let off_centre = |i: usize| {
            if (12..17).contains(&i) {
                (0.0, 0.0)
            } else {
                (0.125, 0.25)
            }
        };
        let source = shaped(40, off_centre, |i| {
            if (24..34).contains(&i) {
                25.0
            } else {
                0.0
            }
        });
        let r = gamma_test(bg, 60.0, &source, 1.0, 5e-4);
        assert!(r.alarm, "{r:?}");
        assert_eq!(r.channel, Some("side_a_over_b"), "{r:?}");
        assert!((r.shadow - 0.8125).abs() < 0.02, "{r:?}");
    }

    #[test]
    fn neutron_alarm_on_the_summed_channel() {
        let quiet: Vec<[u32; 4]> = (0..40).map(|i| [u32::from(i % 13 == 0), 0, 0, 0]).collect();
        assert!(!neutron_test(2.0, &quiet, 1.0, 5e-4).alarm);
        let mut hot = quiet.clone();
        for iv in &mut hot[10..20] {
            iv[1] += 2;
            iv[2] += 1;
        }
        let r = neutron_test(2.0, &hot, 1.0, 5e-4);
        assert!(r.alarm, "{r:?}");
        assert!(neutron_test(0.0, &[], 1.0, 5e-4).counts == 0);
    }
}
