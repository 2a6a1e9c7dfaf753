//! The radiation study, long run: `cargo bench -p acsgd --bench radiation`. Prints the table
//! the README quotes (see `tests/study/mod.rs` for the model).

#[path = "../tests/study/mod.rs"]
mod study;

fn main() {
    let n: usize = std::env::var("ACSGD_STUDY_NULL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let t = std::time::Instant::now();
    let rows = study::run(
        2026,
        n,
        n / 10,
        n / 20,
        &[50.0, 100.0, 150.0, 200.0, 300.0, 500.0],
    );
    print!("{}", study::render(&rows));
    let total: usize = rows.iter().map(|r| r.n).sum();
    println!(
        "\n{total} occupancies in {:.1} s ({:.0} µs each, both tests)",
        t.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64() * 1e6 / total as f64
    );
}
