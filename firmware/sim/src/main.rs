//! `lane-node-sim`: writes a raw lane scenario for the firmware (host replay, QEMU, HIL).
//!
//! ```text
//! lane-node-sim SCENARIO DIR [SEED]
//! ```
//! writes `DIR/raw.bin` (raw samples), `DIR/node.cfg` (the matching node settings) and
//! `DIR/truth.json` (what really crossed). Scenarios: `clean` (one steady truck), `overweight`
//! (its second axle at 13 t), `loop-fault` (the scale loop opens while the truck is on it),
//! `queue` (20 trucks under the study's wide assumptions).

use std::path::PathBuf;
use std::process::ExitCode;

use lane_node_sim::{Assumptions, LoopFaultAt, Rng, Scene};

fn scene(name: &str, seed: u64) -> Option<Scene> {
    let mut rng = Rng::new(seed);
    Some(match name {
        "clean" => Scene::queue(&mut rng, &Assumptions::calm(), 1),
        "overweight" => {
            let mut s = Scene::queue(&mut rng, &Assumptions::calm(), 1);
            let a = &mut s.arrivals[0].truck.axles[1];
            let share = a.left_kg / a.load_kg;
            a.load_kg = 13_000.0;
            a.left_kg = 13_000.0 * share;
            a.right_kg = 13_000.0 - a.left_kg;
            s
        }
        "loop-fault" => {
            let mut s = Scene::queue(&mut rng, &Assumptions::calm(), 1);
            let a = &s.arrivals[0];
            let from_s = a.at_s + s.lane.time_to(&a.truck, 3.0);
            s.faults.push(LoopFaultAt {
                loop_index: 0,
                from_s,
                to_s: s.duration_s + 100.0,
                open: true,
            });
            // Long enough for the vehicle's timeout to close its record.
            s.duration_s += 10.0;
            s
        }
        "queue" => Scene::queue(&mut rng, &Assumptions::wide(), 20),
        _ => return None,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(name), Some(dir)) = (args.first(), args.get(1)) else {
        eprintln!("usage: lane-node-sim clean|overweight|loop-fault|queue DIR [SEED]");
        return ExitCode::from(2);
    };
    let seed = match args.get(2).map(|s| s.parse::<u64>()) {
        None => 1,
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            eprintln!("lane-node-sim: seed {:?}: {e}", args[2]);
            return ExitCode::from(2);
        }
    };
    let Some(scene) = scene(name, seed) else {
        eprintln!("lane-node-sim: no scenario {name:?} (clean, overweight, loop-fault, queue)");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    let mut rng = Rng::new(seed.wrapping_add(0x5151));
    let raw = scene.render(&mut rng);
    let truth = serde_json::to_string_pretty(&scene.truths()).expect("truths serialise");
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("raw.bin"), &raw))
        .and_then(|()| std::fs::write(dir.join("node.cfg"), scene.node_cfg()))
        .and_then(|()| std::fs::write(dir.join("truth.json"), truth + "\n"));
    if let Err(e) = written {
        eprintln!("lane-node-sim: writing {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    eprintln!(
        "lane-node-sim: {name} ({} trucks, {:.1} s, {} bytes) in {}",
        scene.arrivals.len(),
        scene.duration_s,
        raw.len(),
        dir.display()
    );
    ExitCode::SUCCESS
}
