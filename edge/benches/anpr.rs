//! Plate recognition latency: `cargo bench -p acsgd --bench anpr`.
//!
//! Whole frames (1280x720: the plate models' localisation, rectification, OCR, correction,
//! then the text models' detection around what the localiser marked and recognition), the
//! same with the text detector over the whole frame (the reader before 2026-12-05) and the
//! plate models alone (the reader before the text models came), for the ratios, and each
//! recogniser alone on single crops, with the built-in models and ONNX Runtime's default
//! threads (one per core). Frames come from `edge/tests/data/plates/` or `$ACSGD_ANPR_DIR`
//! (for example the 1000-frame test set `models/plates/synth.py scenes` writes); each is
//! read `$ACSGD_ANPR_ROUNDS` times (default 5) after one untimed warm-up.
//!
//! `$ACSGD_ANPR_BEFORE=DIR`: the models in DIR (those it holds; the built-in ones for the
//! rest) are measured too, in the same run, each frame and crop read by both readers in
//! turn, so that a change of models is compared on the same machine at the same moment.
//!
//! `$ACSGD_ANPR_SPIN=0|1`: whether the inference threads spin between operators (`[anpr]
//! spin`; default its default); `$ACSGD_ANPR_BEFORE_SPIN=0|1` likewise for the readers of
//! `$ACSGD_ANPR_BEFORE` (default the same), so that spinning is compared in turn too, with
//! the same models in DIR. `$ACSGD_ANPR_THREADS=N`: threads per inference (`[anpr] threads`,
//! default 0: one per core), for both readers. `$ACSGD_ANPR_BEFORE_PAD=W`: the readers of
//! `$ACSGD_ANPR_BEFORE` pad a frame's text lines all to the widest of them, at least W
//! (`text::Padding::Widest`: at 320 before 2026-12-07, at 224 until stop 65; default the
//! padding of now), so that a padding is compared in turn too (an empty DIR: the same models).
//! `$ACSGD_ANPR_BEFORE_LARGEST=0|1`: whether the readers of `$ACSGD_ANPR_BEFORE` take the
//! detector's third look where nothing else read a plate (`Reader::largest_look`: not before
//! stop 66; default yes).

use std::path::PathBuf;
use std::time::Instant;

use acsgd::anpr::models::{init_runtime, ModelSource};
use acsgd::anpr::pipeline::Reader;
use acsgd::anpr::text::Padding;
use opencv::prelude::*;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// One line of the report: the median and 95th percentile of `v`, in milliseconds.
fn report(name: &str, v: &mut [f64], note: &str) {
    println!(
        "{name} median {:6.2} ms  p95 {:6.2} ms{note}",
        pct(v, 0.5),
        pct(v, 0.95)
    );
}

fn main() {
    let dir = std::env::var_os("ACSGD_ANPR_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/plates"));
    let rounds: usize = std::env::var("ACSGD_ANPR_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let flag = |name: &str, default: bool| match std::env::var(name).as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        Ok(v) => panic!("{name}={v}: 0 or 1"),
        Err(_) => default,
    };
    let spin = flag("ACSGD_ANPR_SPIN", acsgd::anpr::settings::SPIN);
    let env = init_runtime(None).expect("ONNX Runtime (run .ci/setup)");
    let threads: usize = std::env::var("ACSGD_ANPR_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let source = ModelSource {
        spin,
        threads,
        ..ModelSource::default()
    };
    let mut reader = Reader::new(&env, &source).expect("models");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("frame directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    paths.sort();
    let frames: Vec<Mat> = paths
        .iter()
        .map(|p| {
            opencv::imgcodecs::imread(p.to_str().unwrap(), opencv::imgcodecs::IMREAD_COLOR).unwrap()
        })
        .collect();
    let (mut whole, mut loc, mut ocr_frame) = (Vec::new(), Vec::new(), Vec::new());
    let (mut plates_only, mut det, mut rec) = (Vec::new(), Vec::new(), Vec::new());
    let mut whole_det = Vec::new();
    let mut crops = Vec::new();
    for f in &frames {
        crops.extend(reader.read(f).unwrap().into_iter().map(|p| p.crop));
    }
    for _ in 0..rounds {
        for f in &frames {
            let t = Instant::now();
            reader.read(f).unwrap();
            whole.push(t.elapsed().as_secs_f64() * 1e3);
            loc.push(reader.timing.localise_ms);
            ocr_frame.push(reader.timing.recognise_ms);
            det.push(reader.text.detect_ms);
            rec.push(reader.text.recognise_ms);
            let t = Instant::now();
            reader.read_plates(f).unwrap();
            plates_only.push(t.elapsed().as_secs_f64() * 1e3);
            // The reader before the text detector looked first around the localiser's marks:
            // the plate models, then the text models over the whole frame.
            let t = Instant::now();
            reader.read_plates(f).unwrap();
            reader.text.read(f).unwrap();
            whole_det.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut line = Vec::new();
    for _ in 0..rounds {
        for c in &crops {
            let t = Instant::now();
            reader.text.recognise(std::slice::from_ref(c)).unwrap();
            line.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    // The previous models, each frame and crop in turn with the current ones.
    if let Some(before) = std::env::var_os("ACSGD_ANPR_BEFORE").map(PathBuf::from) {
        let source = ModelSource {
            dir: Some(before.clone()),
            threads,
            spin: flag("ACSGD_ANPR_BEFORE_SPIN", spin),
        };
        let mut old = Reader::new(&env, &source).expect("the previous models");
        old.largest_look = flag("ACSGD_ANPR_BEFORE_LARGEST", true);
        if let Ok(v) = std::env::var("ACSGD_ANPR_BEFORE_PAD") {
            // A width the bench cannot read would compare the padding with itself.
            old.text.padding = match v.parse() {
                Ok(w) if w > 0 => Padding::Widest(w),
                _ => panic!("ACSGD_ANPR_BEFORE_PAD={v}: a width in pixels"),
            };
        }
        let (mut now_f, mut old_f, mut now_c, mut old_c) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut now_d, mut old_d) = (Vec::new(), Vec::new());
        let (mut now_r, mut old_r) = (Vec::new(), Vec::new());
        for f in &frames {
            old.read(f).unwrap();
        }
        for _ in 0..rounds {
            for f in &frames {
                for (r, v, d, l) in [
                    (&mut reader, &mut now_f, &mut now_d, &mut now_r),
                    (&mut old, &mut old_f, &mut old_d, &mut old_r),
                ] {
                    let t = Instant::now();
                    r.read(f).unwrap();
                    v.push(t.elapsed().as_secs_f64() * 1e3);
                    d.push(r.text.detect_ms);
                    l.push(r.text.recognise_ms);
                }
            }
            for c in &crops {
                for (r, v) in [(&mut reader, &mut now_c), (&mut old, &mut old_c)] {
                    let t = Instant::now();
                    r.text.recognise(std::slice::from_ref(c)).unwrap();
                    v.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        println!(
            "in turn with the models of {} (threads spinning: now {spin}, before {}; lines padded: now {:?}, before {:?}; third look: now {}, before {}):",
            before.display(),
            source.spin,
            reader.text.padding,
            old.text.padding,
            reader.largest_look,
            old.largest_look
        );
        report("  whole frame, now   ", &mut now_f, "");
        report("  whole frame, before", &mut old_f, "");
        report("  text detect, now   ", &mut now_d, "");
        report("  text detect, before", &mut old_d, "");
        report("  text read, now     ", &mut now_r, "");
        report("  text read, before  ", &mut old_r, "");
        report("  text crop, now     ", &mut now_c, "");
        report("  text crop, before  ", &mut old_c, "");
        println!(
            "  now / before: whole frame {:.2}, text read {:.2}, text crop {:.2}",
            pct(&mut now_f, 0.5) / pct(&mut old_f, 0.5),
            pct(&mut now_r, 0.5) / pct(&mut old_r, 0.5),
            pct(&mut now_c, 0.5) / pct(&mut old_c, 0.5)
        );
    }
    let mut single = Vec::new();
    for _ in 0..rounds {
        for c in &crops {
            let t = Instant::now();
            reader.recognise(std::slice::from_ref(c)).unwrap();
            single.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    println!(
        "{} frames ({}x{}) x {rounds}, {} crops, threads spinning: {spin}, threads per inference: {threads} (0: one per core)",
        frames.len(),
        frames[0].cols(),
        frames[0].rows(),
        crops.len()
    );
    report("whole frame  ", &mut whole, "");
    report("  text detect", &mut det, "");
    report(
        "  text read  ",
        &mut rec,
        " (every line, joined lines, decoding)",
    );
    report("  localise   ", &mut loc, "");
    report(
        "  rectify+OCR",
        &mut ocr_frame,
        " (the crops no text read covers)",
    );
    report(
        "OCR one crop ",
        &mut single,
        " (input prep + inference + decoding)",
    );
    report(
        "text one crop",
        &mut line,
        " (input prep + inference + folding)",
    );
    let (w, d, p) = (
        pct(&mut whole, 0.5),
        pct(&mut whole_det, 0.5),
        pct(&mut plates_only, 0.5),
    );
    println!(
        "text detector over the whole frame (the reader before): whole frame median {d:6.2} ms; now {:.2} x that",
        w / d
    );
    println!(
        "plate models alone (the previous reader): whole frame median {p:6.2} ms; now {:.1} x that",
        w / p
    );
}
