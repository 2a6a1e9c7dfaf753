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
//! expectation was the occupancy's median). What every shadow has in common is that it only
//! removes counts, so the expectation here never goes below the background: each side of the
//! lane and their sum are tested in sliding windows of 0.4, 1 and 2 × `window_s` against the
//! background, or the occupancy's median level where that is higher, up to [`NORM_MAX`] (a
//! uniformly raised cargo or background). The Poisson threshold's upper tail is
//! `gamma_false_alarms / tests` (Bonferroni over every channel, window length and position),
//! widened by the uncertainty of the expectation. A source passing in deep shadow can hide
//! under the background it removed; that is the price of never alarming on a vehicle's shape.
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

/// What the gamma test found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GammaResult {
    pub alarm: bool,
    /// The channel that alarmed first (`side_a`, `side_b`, `sum`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<&'static str>,
    /// Summed background, counts per second.
    pub background_cps: f64,
    /// The occupancy's median level over background (below 1: shadowing; above: a raised
    /// cargo or background).
    pub shadow: f64,
    /// The summed channel's alarm threshold in the middle window, counts per second.
    pub threshold_cps: f64,
    /// The summed channel's highest middle window, counts per second.
    pub max_cps: f64,
    /// Largest excess over threshold (window count / threshold) among all tests.
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

/// The gamma channels: each side of the lane (a source near one pillar shows there over half
/// the background) and the sum (a centred source).
const CHANNELS: [&str; 3] = ["side_a", "side_b", "sum"];

/// The channels of four detector values.
fn channel_values<T: Copy + std::ops::Add<Output = T>>(c: [T; 4]) -> [T; 3] {
    [c[0] + c[1], c[2] + c[3], c[0] + c[1] + c[2] + c[3]]
}

/// Window lengths tested, as multiples of `window_s`: a source that passes quickly stands out
/// best in a short window, a slow one in a long one.
const WINDOW_FACTORS: [f64; 3] = [0.4, 1.0, 2.0];

/// Relative uncertainty allowed for the background estimate itself (the mean of a minute of
/// one-second lines at a few hundred cps is known to a fraction of this).
const BACKGROUND_REL: f64 = 0.01;
/// Window length in whole intervals.
fn window_intervals(window_s: f64, n: usize) -> usize {
    (((window_s / INTERVAL_S).round() as usize).max(1)).min(n.max(1))
}

/// The window lengths tested, in whole intervals ([`WINDOW_FACTORS`] of `window_s`), each once.
fn window_widths(window_s: f64, n: usize) -> Vec<usize> {
    let mut widths: Vec<usize> = WINDOW_FACTORS
        .iter()
        .map(|f| window_intervals(window_s * f, n))
        .collect();
    widths.dedup();
    widths
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

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The gamma test of one occupancy. `background` is counts per second per detector.
///
/// Two tests share the budget, half each:
///
/// * **Against the ceiling.** Shadowing only removes counts, in whatever shape the vehicle has
///   (a cab, a gap, a trailer, closer to one pillar), so here the expectation never goes below
///   the background: each window is held against the background, or against the occupancy's
///   own median level where that is higher (a uniformly raised cargo or a background that
///   rose since it was measured), up to [`NORM_MAX`]. Counts above that are counts no shadow
///   can explain. A source passing in deep shadow can hide under the background it removed.
/// * **Against an even shadow.** Where the occupancy's level is the same from end to end
///   (its running median stays within the noise of its median), the shadow is measured, not
///   assumed: the expectation is the background times the occupancy's median level. This
///   finds the sources the first test cannot see in shadow, and is not used on an occupancy
///   whose shadow has a shape (a gap behind the cab looks exactly like a source to it).
///
/// Each test shares its half (Bonferroni) over every channel, window length and window
/// position; overlapping windows are correlated, so the real rate is lower still.
pub fn gamma_test(
    background: [f64; 4],
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
    // Each channel's median level over the background, and its uncertainty (≈ 1.25 σ/√n).
    let mut level = [1.0f64; 3];
    let mut level_rel = [0.0f64; 3];
    for c in 0..3 {
        let per_interval = bg3[c] * INTERVAL_S;
        if per_interval <= 0.0 {
            continue;
        }
        let mut v: Vec<f64> = series.iter().map(|x| x[c]).collect();
        level[c] = median(&mut v) / per_interval;
        level_rel[c] = 1.25 / (per_interval * level[c].max(0.01) * n as f64).sqrt();
    }
    result.shadow = level[2];
    let budget = false_alarms / 2.0;
    // The ceiling: background, or the raised median level (known only to its uncertainty).
    let ceiling: [(f64, f64); 3] = std::array::from_fn(|c| {
        let l = level[c].clamp(1.0, NORM_MAX);
        let rel = if level[c] > 1.0 { level_rel[c] } else { 0.0 };
        (l, BACKGROUND_REL.hypot(rel))
    });
    scan(intervals, bg3, ceiling, window_s, budget, &mut result);
    cross_side(intervals, window_s, budget, &mut result);
    result
}

/// A point source near one pillar raises that side of the lane and hardly the other, while a
/// shadow of any shape (gaps included) moves both sides together. Each window of one side is
/// held against the other side's same window times the occupancy's side ratio; the
/// difference's variance is both sides' Poisson variance plus the ratio's own uncertainty.
fn cross_side(intervals: &[[u32; 4]], window_s: f64, budget: f64, result: &mut GammaResult) {
    let n = intervals.len();
    let side = |iv: &[u32; 4], a: bool| -> f64 {
        if a {
            f64::from(iv[0]) + f64::from(iv[1])
        } else {
            f64::from(iv[2]) + f64::from(iv[3])
        }
    };
    let total_a: f64 = intervals.iter().map(|iv| side(iv, true)).sum();
    let total_b: f64 = intervals.iter().map(|iv| side(iv, false)).sum();
    if total_a <= 0.0 || total_b <= 0.0 {
        return;
    }
    let widths = window_widths(window_s, n);
    let tests: usize = widths.iter().map(|&w| 2 * (n + 1 - w)).sum();
    let z = normal_quantile(1.0 - budget / tests as f64);
    for (this, other, total_this, total_other, name) in [
        (true, false, total_a, total_b, "side_a_over_b"),
        (false, true, total_b, total_a, "side_b_over_a"),
    ] {
        // This side's counts per count of the other, over the whole occupancy; relative
        // uncertainty √(1/ΣA + 1/ΣB).
        let r = total_this / total_other;
        let r_rel = (1.0 / total_this + 1.0 / total_other).sqrt();
        for &w in &widths {
            for start in 0..=n - w {
                let win = &intervals[start..start + w];
                let a: f64 = win.iter().map(|iv| side(iv, this)).sum();
                let b: f64 = win.iter().map(|iv| side(iv, other)).sum();
                let expect = r * b;
                // The variance from the occupancy's mean rates, not from this window's own
                // counts (a low `b` would shrink it exactly when the difference is large).
                let mu_this = total_this * w as f64 / n as f64;
                let mu_other = total_other * w as f64 / n as f64;
                let var = mu_this + r * r * mu_other + (r_rel * expect).powi(2);
                if var <= 0.0 {
                    continue;
                }
                let ratio = (a - expect) / (z * var.sqrt());
                result.peak_ratio = result.peak_ratio.max(ratio);
                if ratio >= 1.0 && !result.alarm {
                    result.alarm = true;
                    result.channel = Some(name);
                }
            }
        }
    }
}

/// Tests every channel in every window of each length against `expect` (level over
/// background and its relative uncertainty, per channel), at `budget` shared over all of
/// them; records the first alarm and the diagnostics in `result`.
fn scan(
    intervals: &[[u32; 4]],
    bg3: [f64; 3],
    expect: [(f64, f64); 3],
    window_s: f64,
    budget: f64,
    result: &mut GammaResult,
) {
    let n = intervals.len();
    let widths = window_widths(window_s, n);
    let tests: usize = widths.iter().map(|&w| CHANNELS.len() * (n + 1 - w)).sum();
    let alpha = budget / tests as f64;
    let middle = window_intervals(window_s, n);
    for &w in &widths {
        let window_t = w as f64 * INTERVAL_S;
        let thresholds: [f64; 3] = std::array::from_fn(|c| {
            let (level, rel) = expect[c];
            let mu = bg3[c] * level * window_t;
            if mu <= 0.0 {
                return f64::INFINITY;
            }
            let t = poisson_threshold(mu, alpha) as f64;
            // Widen the Poisson margin by the uncertainty of the expectation itself.
            let z = (t - mu) / mu.sqrt();
            mu + z * (mu + (rel * mu).powi(2)).sqrt()
        });
        if w == middle && !result.threshold_cps.is_finite() {
            result.threshold_cps = thresholds[2] / window_t;
        }
        for s in window_sums(intervals, w) {
            let v = channel_values(s);
            if w == middle {
                result.max_cps = result.max_cps.max(v[2] as f64 / window_t);
            }
            for c in 0..CHANNELS.len() {
                let ratio = v[c] as f64 / thresholds[c];
                result.peak_ratio = result.peak_ratio.max(ratio);
                if ratio >= 1.0 && !result.alarm {
                    result.alarm = true;
                    result.channel = Some(CHANNELS[c]);
                }
            }
        }
    }
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
        let r = gamma_test(bg, &flat, 1.0, 5e-4);
        assert!(!r.alarm, "{r:?}");
        assert!((r.shadow - 1.0).abs() < 0.02);
        let mut peak = flat.clone();
        for iv in &mut peak[12..17] {
            iv[0] += 25;
            iv[1] += 20;
        }
        let r = gamma_test(bg, &peak, 1.0, 5e-4);
        assert!(r.alarm, "{r:?}");
        assert!(matches!(r.channel, Some("d1" | "side_a")), "{r:?}");
        // The same counts spread over the whole occupancy hide in the plain gross test.
        assert!(!plain_gross_test(bg, &peak));
    }

    #[test]
    fn shadowing_is_estimated_from_the_occupancy() {
        let bg = [300.0; 4];
        let shadowed: Vec<[u32; 4]> = (0..40).map(|_| [48, 48, 48, 48]).collect();
        let r = gamma_test(bg, &shadowed, 1.0, 5e-4);
        assert!((r.shadow - 0.8).abs() < 1e-9, "{r:?}");
        assert!(!r.alarm);
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
