//! A synthetic event source for the demo: seals driving from Khorgos towards Almaty (one fix
//! per second each) and trucks crossing two lanes (a passage every few seconds, some over the
//! axle limit with an alert).
//!
//! Interim: the demo's events are made here until the sensor drivers and lane fusion exist;
//! then the demo replays a bundled trace through them instead and this module goes.

use serde_json::{json, Value};

use crate::envelope::Event;

const KHORGOS: (f64, f64) = (44.2125, 80.4089);
const ALMATY: (f64, f64) = (43.2389, 76.8897);

/// Deterministic generator (xorshift), so two demo runs show the same traffic.
pub struct Traffic {
    rng: u64,
    tick: u64,
    seals: Vec<Seal>,
    passages: u64,
}

struct Seal {
    id: String,
    mrn: String,
    progress: f64,
    speed_kmh: f64,
}

impl Traffic {
    pub fn new(seals: usize) -> Traffic {
        let mut t = Traffic {
            rng: 0x2545_f491_4f6c_dd1d,
            tick: 0,
            seals: Vec::new(),
            passages: 0,
        };
        for i in 0..seals {
            let speed = 50.0 + 30.0 * t.unit();
            t.seals.push(Seal {
                id: format!("seal-{:04}", 1001 + i),
                mrn: format!(
                    "26KZ55000000{:05}{}",
                    1001 + i,
                    (b'A' + (i % 26) as u8) as char
                ),
                progress: 0.05 * i as f64,
                speed_kmh: speed,
            });
        }
        t
    }

    fn unit(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The events of the next second.
    pub fn second(&mut self) -> Vec<Event> {
        self.tick += 1;
        let mut out = Vec::new();
        // ~330 km between the two cities.
        for i in 0..self.seals.len() {
            let jitter = self.unit() - 0.5;
            let s = &mut self.seals[i];
            s.progress = (s.progress + s.speed_kmh / 3600.0 / 330.0) % 1.0;
            let lat = KHORGOS.0 + (ALMATY.0 - KHORGOS.0) * s.progress + jitter * 1e-4;
            let lon = KHORGOS.1 + (ALMATY.1 - KHORGOS.1) * s.progress;
            out.push(Event::now(
                "position",
                json!({"tracker": s.id, "protocol": "egts", "mrn": s.mrn, "lat": round6(lat),
                       "lon": round6(lon), "speed_kmh": (s.speed_kmh * 10.0).round() / 10.0,
                       "course": 258, "valid": true, "seal": "closed"}),
            ));
        }
        if self.tick % 4 == 0 {
            out.extend(self.passage());
        }
        out
    }

    fn passage(&mut self) -> Vec<Event> {
        self.passages += 1;
        let n = self.passages;
        let lane = if n % 2 == 0 { "2" } else { "1" };
        let axles = 3 + (n % 4) as usize;
        let overweight = n % 5 == 0;
        let mut loads: Vec<u32> = (0..axles)
            .map(|_| (6500.0 + 2500.0 * self.unit()) as u32 / 10 * 10)
            .collect();
        if overweight {
            loads[1] = 11_400;
        }
        let gross: u32 = loads.iter().sum();
        let id = format!("p-{lane}-{n:06}");
        let plate = format!(
            "{:03}{}{:02}",
            100 + (n * 37) % 900,
            ["ABC", "KZT", "AXE", "BMN"][(n % 4) as usize],
            2 + n % 17
        );
        let channel = if overweight { "red" } else { "green" };
        let rules = if overweight {
            json!([{"rule": "axle_load", "result": "fail", "detail": {"axle": 2, "kg": 11400, "limit_kg": 10000}}])
        } else {
            json!([{"rule": "axle_load", "result": "pass"}])
        };
        let mut out = vec![Event::now(
            "passage",
            json!({"passage": id, "lane": lane, "plates": {"front": plate, "rear": null},
                   "axles": axles, "axle_loads_kg": loads, "gross_kg": gross,
                   "radiation": {"verdict": "clear"}, "seal": "closed", "mrn": Value::Null,
                   "channel": channel, "rules": rules}),
        )];
        if overweight {
            out.push(Event::now(
                "alert",
                json!({"passage": id, "lane": lane, "severity": "high", "rule": "axle_load",
                       "message": "alert.axle_overload", "params": {"axle": 2, "kg": 11400, "limit_kg": 10000}}),
            ));
        }
        out
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_of_traffic_is_hundreds_of_events_with_passages_and_alerts() {
        let mut t = Traffic::new(6);
        let events: Vec<Event> = (0..60).flat_map(|_| t.second()).collect();
        let count = |k: &str| events.iter().filter(|e| e.kind == k).count();
        assert_eq!(count("position"), 360);
        assert_eq!(count("passage"), 15);
        assert_eq!(count("alert"), 3);
        assert!(events.iter().all(|e| crate::envelope::valid_type(&e.kind)));
    }
}
