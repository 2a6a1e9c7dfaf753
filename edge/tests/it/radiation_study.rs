//! The radiation study's targets on a quick run (the long run is `cargo bench -p acsgd --bench
//! radiation`).
//!
//! On the simulator's occupancies: at most 1 false alarm in 1000, NORM quiet, higher detection
//! than the plain 4σ gross-count test at every strength, and than the plain test calibrated
//! to the same false-alarm rate from 100 cps up. (The calibrated plain test leans on the
//! simulator's one constant shadow depth: calibrated on it, a gross count may sit 4σ *below*
//! background; on families of shadow shapes the same calibration gives k ≈ +3σ and finds
//! almost nothing. The alarm trusts no shadow shape, which costs it sources hidden in deep
//! shadow, so it finds 80 % at 150 cps where the simulator-tuned alarm before it found 99 %;
//! see `fusion/radiation.rs`.)
//!
//! On families of models the alarm was not designed on (`study/families.rs`): the budget holds
//! in every null family, detection beats the gross-count test at the same rate in every source
//! family and the 1 s sum test (the plain test) near a pillar, NORM alarms stay under
//! 10 %. Centred sources are the one family where the 1 s sum test, given the whole budget,
//! finds more (see the README's table): it is that family's matched test, and it alarms on 40 %
//! of NORM cargo.

use crate::study;

#[test]
fn appliance_alarm_beats_the_plain_gross_count_test() {
    let rows = study::run(2026, 20_000, 2_000, 1_000, &[100.0, 150.0, 200.0, 300.0]);
    let table = study::render(&rows);
    eprintln!("{table}");
    // The gamma budget is 5e-4 per occupancy: 10 in 20 000; the target is 1e-3.
    let null = &rows[0];
    assert!(
        null.ours * 1000 <= null.n,
        "{} false alarms in {}",
        null.ours,
        null.n
    );
    // NORM cargo raised 10–30 % is benign: the budget's order, far below the plain test.
    let norm = &rows[1];
    assert!(
        norm.ours * 500 <= norm.n,
        "NORM alarmed {} in {}\n{table}",
        norm.ours,
        norm.n
    );
    assert!(norm.ours * 10 < norm.plain, "{table}");
    for r in &rows[2..] {
        assert!(r.ours > r.plain, "{}\n{table}", r.label);
    }
    for r in &rows[2..] {
        assert!(r.ours > r.plain_calibrated, "{}\n{table}", r.label);
    }
    // Not a marginal difference: well above the calibrated plain test at 150 cps, nearly
    // every source at 200.
    assert!(
        rows[3].ours_rate() > rows[3].plain_calibrated_rate() + 0.3,
        "{table}"
    );
    assert!(rows[4].ours_rate() > 0.95, "{table}");
}

#[test]
fn the_budget_holds_on_families_of_models_the_alarm_was_not_designed_on() {
    use study::families::{reference_ks, references, run, upper95, Family};
    let rows = run(7, 8_000, 1_000);
    let table = study::families::render(&rows);
    eprintln!("{table}");
    let budget = acsgd::fusion::settings::RadiationSettings::default().gamma_false_alarms;
    let (mut k, mut n) = (0, 0);
    for r in rows.iter().filter(|r| r.family.is_null()) {
        // Each family's measured rate within the budget (its own 95 % bound needs the long
        // run's 50 000 a family), and all of them together with their bound.
        assert!(
            r.rate() <= budget,
            "{}: {} in {}\n{table}",
            r.family.label(),
            r.ours,
            r.n
        );
        k += r.ours;
        n += r.n;
    }
    assert!(upper95(k, n) < budget, "pooled nulls: {k} in {n}\n{table}");
    let ks = reference_ks(&rows, budget);
    for r in rows.iter().filter(|r| !r.family.is_null()) {
        if r.family == Family::Norm {
            assert!(r.rate() <= 0.10, "NORM alarms {}\n{table}", r.rate());
            continue;
        }
        // [reference][4σ, pooled, every family, alarm's rate, NORM-matched]: gross count,
        // 1 s sum, per side.
        let refs = references(&ks, r);
        for k in refs[0] {
            assert!(
                r.ours > k + r.n / 50,
                "{}: not above the gross count at the same rate\n{table}",
                r.family.label()
            );
        }
        // At the NORM rate the alarm allows itself, every reference finds less.
        for by_k in refs {
            assert!(
                r.ours > by_k[4] + r.n / 50,
                "{}: not above a reference at the same NORM rate\n{table}",
                r.family.label()
            );
        }
        // The target: above the plain test (the 1 s sum) held to the alarm's own
        // false-alarm rate in every null family. (Centred, this quick run has it 92 against
        // 79 in 1 000; the long run in the README 0.092 against 0.080.)
        assert!(
            r.ours > refs[1][3],
            "{}: not above the 1 s sum at the alarm's own rate\n{table}",
            r.family.label()
        );
        if r.family == Family::NearPillar {
            // At the budget in every family, and at the alarm's own rate in every family.
            for k in [refs[1][2], refs[1][3]] {
                assert!(
                    r.ours > k + r.n / 10,
                    "near a pillar: not above the 1 s sum at the same rate\n{table}"
                );
            }
        }
    }
}
