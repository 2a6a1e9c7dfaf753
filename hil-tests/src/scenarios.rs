//! The committed scenarios, written by the simulator (`acsgd_testkit::simulate`): one lane with a lane
//! node and a portal on serial lines, cameras with their own plate recognition and an EGTS
//! seal feed over TCP. Each scenario's trucks are drawn from a fixed seed, searched so that
//! the truck shows its one finding and nothing borderline (a 5-axle truck, gross mass well
//! inside the limit), so the expected outcome follows from how it was built, not from running
//! the appliance. `tests/hil/traces.rs` checks the folders are exactly what this writes.

use acsgd_testkit::simulate::{self, Options, Rng, Special, Truck};

/// A scenario as files.
pub struct Generated {
    pub name: &'static str,
    pub config: String,
    pub trace: String,
    pub expect: String,
}

/// What a truck of a kind must give: channel and the exact failed rules.
fn verdict(s: Special) -> (&'static str, &'static [&'static str]) {
    match s {
        Special::None | Special::Norm => ("green", &[]),
        Special::OverweightAxle => ("yellow", &["axle_load"]),
        Special::UnderDeclared => ("red", &["declared_mass"]),
        Special::GammaSource => ("red", &["radiation_gamma"]),
        Special::NeutronSource => ("red", &["radiation_neutron"]),
        Special::SealTampered => ("red", &["seal_tamper"]),
        Special::SealSilent => ("yellow", &["seal_silent"]),
        Special::RouteDeviation => ("red", &["route_deviation"]),
        Special::PlateUnread => ("yellow", &["plate_unread"]),
        Special::NoDeclaration => ("yellow", &["no_declaration"]),
        Special::Watchlisted => ("red", &["watchlist"]),
    }
}

/// A 5-axle truck whose gross is well inside the limit: no borderline verdicts.
fn clear_cut(t: &Truck) -> bool {
    t.axles.len() == 5 && t.gross_kg() < 36_000.0 && t.speed_kmh > 6.0
}

struct Plan {
    name: &'static str,
    description: &'static str,
    /// Each truck's kind, and the gap after the previous one (seconds).
    trucks: &'static [(Special, f64)],
    /// The fault section of expect.toml (truck arrival times can be used through `{arrival:N}`
    /// and `{middle:N}`, `{end:N}` for truck N).
    fault: &'static str,
    /// Trucks on the lane when the fault strikes: their passage must come back marked
    /// `recovered`.
    recovered: &'static [usize],
}

/// The `[firmware]` section of a scenario whose truck is weighed by the firmware in QEMU.
const FIRMWARE_OK: &str = "[firmware]\nsensor = \"node-1\"\naxle_tolerance_pct = 5.0\ngross_tolerance_pct = 3.0\nwim_status = \"ok\"\n";

const PLANS: &[Plan] = &[
    Plan { name: "clean_passage", description: "a declared, sealed, clean truck is released (green)", trucks: &[(Special::None, 0.0)], fault: "", recovered: &[] },
    Plan { name: "overweight_axle", description: "a drive axle over 10 t: yellow, axle_load", trucks: &[(Special::OverweightAxle, 0.0)], fault: "", recovered: &[] },
    Plan { name: "gross_over_declared", description: "the weighed gross mass is far above the declared one: red, declared_mass", trucks: &[(Special::UnderDeclared, 0.0)], fault: "", recovered: &[] },
    Plan { name: "radiation_gamma", description: "a gamma source in the cargo: red, radiation_gamma", trucks: &[(Special::GammaSource, 0.0)], fault: "", recovered: &[] },
    Plan { name: "radiation_neutron", description: "a neutron source in the cargo: red, radiation_neutron", trucks: &[(Special::NeutronSource, 0.0)], fault: "", recovered: &[] },
    Plan { name: "norm_cargo", description: "NORM cargo raises the whole profile 10-16 %: benign, green", trucks: &[(Special::Norm, 0.0)], fault: "", recovered: &[] },
    Plan { name: "seal_tampered", description: "the seal reported its case opened on the way: red, seal_tamper", trucks: &[(Special::SealTampered, 0.0)], fault: "", recovered: &[] },
    Plan { name: "seal_silent", description: "the declared seal never reported: yellow, seal_silent", trucks: &[(Special::SealSilent, 0.0)], fault: "", recovered: &[] },
    Plan { name: "route_deviation", description: "the seal left the declared corridor on the way: red, route_deviation", trucks: &[(Special::RouteDeviation, 0.0)], fault: "", recovered: &[] },
    Plan { name: "plate_unread", description: "no camera read a plate: yellow, plate_unread", trucks: &[(Special::PlateUnread, 0.0)], fault: "", recovered: &[] },
    Plan { name: "no_declaration", description: "plates read, no declaration for them: yellow, no_declaration", trucks: &[(Special::NoDeclaration, 0.0)], fault: "", recovered: &[] },
    Plan { name: "watchlist_hit", description: "the tractor's plate is on central's watchlist: red, watchlist", trucks: &[(Special::Watchlisted, 0.0)], fault: "", recovered: &[] },
    Plan { name: "three_trucks_back_to_back", description: "three trucks 1.5 s apart keep their own plates, weights and verdicts", trucks: &[(Special::None, 0.0), (Special::GammaSource, 1.5), (Special::None, 1.5)], fault: "", recovered: &[] },
    Plan { name: "broker_down_whole_trace", description: "the broker is down for the whole trace and comes back: everything arrives, in seq order, nothing lost", trucks: &[(Special::None, 0.0), (Special::OverweightAxle, 6.0)], fault: "[fault]\nkind = \"broker_down\"\n", recovered: &[] },
    Plan { name: "broker_outage_mid_trace", description: "the broker stops while a truck is on the lane and comes back 12 s later: everything arrives, nothing lost", trucks: &[(Special::None, 0.0), (Special::SealTampered, 6.0)], fault: "[fault]\nkind = \"broker_outage\"\nat_ms = {middle:1}\nfor_ms = 12000\n", recovered: &[] },
    Plan { name: "sigkill_mid_passage", description: "the appliance is SIGKILLed while the second of three trucks is on the lane and restarts: no accepted event lost, the truck on the lane gets its passage (recovered from the lane journal), the trucks before and after judged as usual", trucks: &[(Special::None, 0.0), (Special::None, 8.0), (Special::UnderDeclared, 12.0)], fault: "[fault]\nkind = \"sigkill\"\nat_ms = {middle:2}\n", recovered: &[2] },
    Plan { name: "noisy_serial_line", description: "random bytes, truncated frames and bad CRCs between the lane node's frames: each bad frame counted, the passage unharmed", trucks: &[(Special::None, 0.0), (Special::OverweightAxle, 4.0)], fault: "[fault]\nkind = \"noise\"\nsensor = \"node-1\"\n", recovered: &[] },
    Plan { name: "slow_lossy_uplink", description: "the uplink is an 8 kB/s channel that drops the connection every 10 s: every event arrives, nothing lost, in seq order", trucks: &[(Special::None, 0.0), (Special::GammaSource, 6.0)], fault: "[fault]\nkind = \"slow_uplink\"\nbytes_per_s = 8000\ndrop_every_ms = 10000\n", recovered: &[] },
    Plan { name: "serial_unplugged", description: "the lane node's serial adapter is unplugged between two trucks and plugged back: the appliance reopens it by itself", trucks: &[(Special::None, 0.0), (Special::None, 16.0)], fault: "[fault]\nkind = \"unplug\"\nsensor = \"node-1\"\nat_ms = {end_plus:1:2000}\nfor_ms = 5000\n", recovered: &[] },
    Plan { name: "firmware_clean_truck", description: "the lane node is the real firmware in QEMU, weighing the truck from raw load-cell and loop signals: green, its loads within 5 % per axle and 3 % gross of the truth", trucks: &[(Special::None, 0.0)], fault: FIRMWARE_OK, recovered: &[] },
    Plan { name: "firmware_overweight_axle", description: "the firmware in QEMU weighs a drive axle over 10 t from raw signals: yellow, axle_load", trucks: &[(Special::OverweightAxle, 0.0)], fault: FIRMWARE_OK, recovered: &[] },
    Plan { name: "firmware_loop_fault", description: "the scale loop opens for 2 s under the truck: the firmware reports the fault and the loop occupied, and marks the record; yellow, wim", trucks: &[(Special::None, 0.0)], fault: "[firmware]\nsensor = \"node-1\"\naxle_tolerance_pct = 5.0\ngross_tolerance_pct = 3.0\nwim_status = \"sensor_fault\"\n\n[[firmware.loop_fault]]\nloop = 1\nat_ms = {middle:1}\nfor_ms = 2000\n", recovered: &[] },
    Plan { name: "firmware_barrier_refused", description: "closing the barrier while the truck is under it is refused by the firmware, the barrier closes by itself once the truck has left the loop under it; closing after that is done; the passage unharmed: green", trucks: &[(Special::None, 0.0)], fault: "[firmware]\nsensor = \"node-1\"\naxle_tolerance_pct = 5.0\ngross_tolerance_pct = 3.0\nwim_status = \"ok\"\nauto_closes = 1\n\n[[firmware.command]]\nat_ms = 1000\nbarrier = \"open\"\nack = \"done\"\n\n[[firmware.command]]\nat_ms = {barrier_loop:1}\nbarrier = \"close\"\nack = \"refused_occupied\"\n\n[[firmware.command]]\nat_ms = {gone:1}\nbarrier = \"close\"\nack = \"done\"\n", recovered: &[] },
];

/// Every scenario, the real-captures one included (it reads `../shared/traces`, beside the
/// checkout as in CI).
pub fn all() -> Vec<Generated> {
    let mut out: Vec<Generated> = PLANS
        .iter()
        .enumerate()
        .map(|(i, p)| generate(p, 1000 + i as u64 * 100))
        .collect();
    // Never left out quietly: without `../shared` beside the checkout (CI has it) the suite
    // fails here and says what is missing.
    out.push(real_captures(&shared_traces()).unwrap_or_else(|e| panic!("{e}")));
    out
}

/// Reads a capture file, or says which one is missing.
fn capture(path: std::path::PathBuf) -> Result<String, String> {
    std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "the real_captures scenario needs {}: {e} (the `shared` directory with the real \
             device captures belongs beside the checkout)",
            path.display()
        )
    })
}

/// A Teltonika TCP capture is whole: an IMEI handshake, or an AVL packet whose length field
/// matches its bytes (preamble, length, data, CRC).
fn teltonika_whole(hex: &str) -> bool {
    let Ok(b) = acsgd_drivers::decode::unhex(hex.as_bytes()) else {
        return false;
    };
    if b.len() >= 2 && b[..2] == [0, 15] {
        return true;
    }
    b.len() >= 12 && u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize + 12 == b.len()
}

/// Why the appliance rightly leaves a Galileosky or Arnavi capture unanswered on a stream, if
/// it does: a checksum that fails (Traccar's hand-edited samples), or an Iridium SBD message
/// (it comes from the satellite gateway, which expects no answer).
fn not_acknowledged(sensor: &str, hex: &str) -> Option<String> {
    use acsgd_drivers::decode::{unhex, Decoder, Protocol};
    let protocol = match sensor {
        "galileosky" => Protocol::Galileosky,
        "arnavi" => Protocol::Arnavi,
        _ => return None,
    };
    let b = unhex(hex.as_bytes()).ok()?;
    if protocol == Protocol::Galileosky && b.len() > 6 && b[3..6] == [0x01, 0x00, 0x1C] {
        return Some("Iridium SBD message: the gateway expects no answer".into());
    }
    match Decoder::new(protocol).packet(&b) {
        Err(e) => Some(e),
        Ok(r) => r.iter().find_map(|r| match r {
            acsgd_drivers::Reading::Warning(w) => Some(w.problem.clone()),
            _ => None,
        }),
    }
}

/// A Galileosky packet answering a command (tag E0, the command number, then E1, the reply).
fn galileo_reply(hex: &str) -> bool {
    acsgd_drivers::decode::unhex(hex.as_bytes())
        .is_ok_and(|b| b.windows(6).any(|w| w[0] == 0xE0 && w[5] == 0xE1))
}

/// `../shared/traces` beside the checkout.
pub fn shared_traces() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces")
}

/// Real device captures as feeds: a u-blox NEO-M8N's NMEA log (gpsd's regression suite) on
/// a serial GNSS receiver at 10 sentences a second, every TCP capture of Traccar's EGTS,
/// Wialon IPS, Teltonika, Galileosky and Arnavi tests on tracker ports, and the Teltonika records again as UDP
/// datagrams. The expected fixes come from the captures' own
/// references: gpsd's TPV reports with a position, and one per Traccar row with a position.
pub fn real_captures(shared: &std::path::Path) -> Result<Generated, String> {
    let nmea = capture(shared.join("nmea/neo-m8n.log"))?;
    let chk = capture(shared.join("nmea/neo-m8n.log.chk"))?;
    let tpvs = chk
        .lines()
        .filter(|l| l.contains("\"class\":\"TPV\"") && l.contains("\"lat\""))
        .count();
    let mut data: Vec<(i64, String)> = Vec::new();
    let mut t = 0;
    for line in nmea
        .lines()
        .filter(|l| l.starts_with('$') || l.starts_with('!'))
    {
        data.push((t, format!("{t}\tgnss\ttext\t{}", line.trim_end())));
        t += 100;
    }
    let mut tracker_fixes = 0;
    let mut left_out = 0;
    let mut left_out_why = Vec::new();
    for (sensor, file, step) in [
        ("egts", "egts.tsv", 2_000),
        ("wialon", "wialon.tsv", 1_500),
        ("teltonika", "teltonika.tsv", 900),
        ("galileosky", "galileo.tsv", 1_300),
        ("arnavi", "arnavi-binary.tsv", 1_700),
    ] {
        let rows = capture(shared.join("trackers").join(file))?;
        let mut t = 500;
        for row in rows.lines().skip(1) {
            let f: Vec<&str> = row.split('\t').collect();
            if f.len() < 5 || f[1] == "udp" {
                continue;
            }
            // A Teltonika AVL capture whose length field disagrees with its bytes was cut
            // short when recorded: on a stream the appliance would rightly wait for the rest.
            if sensor == "teltonika" && !teltonika_whole(f[4]) {
                left_out += 1;
                continue;
            }
            if let Some(why) = not_acknowledged(sensor, f[4]) {
                left_out_why.push(format!("{sensor} {why}"));
                continue;
            }
            // Traccar counts a Galileosky command reply as a position (it attaches the last
            // known one); the appliance reports the reply alone.
            if f[2].starts_with("position") && !(sensor == "galileosky" && galileo_reply(f[4])) {
                tracker_fixes += 1;
            }
            data.push((t, format!("{t}\t{sensor}\t{}\t{}", f[3], f[4])));
            t += step;
        }
    }
    // The same Teltonika records as a device sends them over UDP: each AVL packet's data in a
    // datagram with its own header (length, packet id, type, AVL packet id, IMEI).
    let rows = capture(shared.join("trackers/teltonika.tsv"))?;
    let mut t = 700;
    let mut imei = None;
    for row in rows.lines().skip(1) {
        let f: Vec<&str> = row.split('\t').collect();
        let Some(b) = f
            .get(4)
            .and_then(|h| acsgd_drivers::decode::unhex(h.as_bytes()).ok())
        else {
            continue;
        };
        if b.len() == 17 && b[..2] == [0, 15] {
            imei = Some(b[2..].to_vec());
            continue;
        }
        let (Some(imei), true) = (imei.as_ref(), teltonika_whole(f[4])) else {
            continue;
        };
        // Codecs 8, 8E and 16 travel over UDP; the text codecs answer commands over TCP.
        if !matches!(b[8], 0x08 | 0x8E | 0x10) {
            continue;
        }
        if f[2].starts_with("position") {
            tracker_fixes += 1;
        }
        let id = (t / 100) as u16;
        let mut d = id.to_be_bytes().to_vec();
        d.push(0x01);
        d.push((id & 0xff) as u8);
        d.extend_from_slice(&(imei.len() as u16).to_be_bytes());
        d.extend_from_slice(imei);
        d.extend_from_slice(&b[8..b.len() - 4]);
        let mut dg = (d.len() as u16).to_be_bytes().to_vec();
        dg.extend(d);
        let hex = acsgd::envelope::to_hex(&dg);
        data.push((t, format!("{t}\tteltonika-udp\thex\t{hex}")));
        t += 1_100;
    }
    data.sort_by_key(|d| d.0);
    let mut trace = format!(
        "# Real captures: gpsd's neo-m8n.log (BSD-2-Clause) and Traccar's EGTS, Wialon IPS, Teltonika,\n\
         # Galileosky and Arnavi test packets (Apache-2.0), from ../shared/traces, timed by the\n\
         # scenario generator.\n\
         # {left_out} Teltonika capture(s) left out: their length field exceeds the bytes recorded.\n",
    );
    for why in &left_out_why {
        trace += &format!("# left out: {why}\n");
    }
    for (_, l) in data {
        trace += &l;
        trace.push('\n');
    }
    let config = "post = \"hil\"\n\n[uplink]\nbroker = \"mqtt://127.0.0.1:1883\"\n\n\
        [storage]\ndata_dir = \"/var/lib/acsgd\"\n\n\
        [[sensors]]\nid = \"gnss\"\nprotocol = \"nmea\"\n\
        transport = { kind = \"serial\", path = \"/dev/null\" }\n\n\
        [[sensors]]\nid = \"egts\"\nprotocol = \"egts\"\n\
        transport = { kind = \"tcp\", listen = \"127.0.0.1:0\" }\n\n\
        [[sensors]]\nid = \"wialon\"\nprotocol = \"wialon\"\n\
        transport = { kind = \"tcp\", listen = \"127.0.0.1:0\" }\n\n\
        [[sensors]]\nid = \"teltonika\"\nprotocol = \"teltonika\"\n\
        transport = { kind = \"tcp\", listen = \"127.0.0.1:0\" }\n\n\
        [[sensors]]\nid = \"teltonika-udp\"\nprotocol = \"teltonika\"\n\
        transport = { kind = \"udp\", listen = \"127.0.0.1:0\" }\n\n\
        [[sensors]]\nid = \"galileosky\"\nprotocol = \"galileosky\"\n\
        transport = { kind = \"tcp\", listen = \"127.0.0.1:0\" }\n\n\
        [[sensors]]\nid = \"arnavi\"\nprotocol = \"arnavi\"\n\
        transport = { kind = \"tcp\", listen = \"127.0.0.1:0\" }\n"
        .to_string();
    let expect = format!(
        "# Written by acsgd_hil::scenarios from ../shared/traces; regenerate with ACSGD_REGENERATE=1.\n\
         description = \"real captures as feeds: every packet acknowledged, every fix delivered\"\n\
         speed = 2.0\n\
         # gpsd reported {tpvs} fixes for the NMEA log, Traccar {tracker_fixes} rows with positions.\n\
         positions_min = {}\n",
        tpvs + tracker_fixes
    );
    Ok(Generated {
        name: "real_captures",
        config,
        trace,
        expect,
    })
}

fn generate(plan: &Plan, seed: u64) -> Generated {
    let lanes = vec!["1".to_string()];
    let o = Options {
        lanes: lanes.clone(),
        ..Options::default()
    };
    // Search seeds until every truck is clear-cut (deterministic: the first that is).
    let mut seed = seed;
    let (trucks, mut rng) = loop {
        let mut rng = Rng::new(seed);
        let mut t_ms = 20_000i64;
        let mut trucks = Vec::new();
        for (n, (special, gap)) in plan.trucks.iter().enumerate() {
            if let Some(prev) = trucks.last() {
                let prev: &Truck = prev;
                let occupancy = (prev.length_m + 2.0) / (prev.speed_kmh / 3.6);
                t_ms = prev.arrival_ms + ((occupancy + gap) * 1000.0) as i64;
            }
            trucks.push(simulate::truck(
                &mut rng,
                "1",
                t_ms,
                seed as u32 * 10 + n as u32 + 1,
                *special,
            ));
        }
        if trucks.iter().all(clear_cut) {
            break (trucks, rng);
        }
        seed += 1;
    };
    let last = trucks.last().expect("a truck");
    let end = last.arrival_ms + ((last.length_m + 2.0) / (last.speed_kmh / 3.6) * 1000.0) as i64;
    let o = Options {
        seed,
        duration_s: (end / 1000 + 15) as u64,
        ..o
    };
    let trace = simulate::trace(&o, &trucks, &mut rng);
    let config = simulate::config("hil", &lanes, "mqtt://127.0.0.1:1883", "/var/lib/acsgd")
        .replace(
            "{ kind = \"url\", url = \"rtsp://127.0.0.1/1/front\" }",
            "{ kind = \"tcp\", listen = \"127.0.0.1:0\" }",
        )
        .replace(
            "{ kind = \"url\", url = \"rtsp://127.0.0.1/1/rear\" }",
            "{ kind = \"tcp\", listen = \"127.0.0.1:0\" }",
        );
    let occupancy_end =
        |t: &Truck| t.arrival_ms + ((t.length_m + 2.0) / (t.speed_kmh / 3.6) * 1000.0) as i64;
    let mut fault = plan.fault.to_string();
    for (n, t) in trucks.iter().enumerate() {
        let k = n + 1;
        fault = fault
            .replace(
                &format!("{{middle:{k}}}"),
                &((t.arrival_ms + occupancy_end(t)) / 2).to_string(),
            )
            .replace(
                &format!("{{end_plus:{k}:2000}}"),
                &(occupancy_end(t) + 2000).to_string(),
            )
            // The firmware's lane (`lane_node_sim::Lane`): the barrier loop at 8–10 m past
            // the scale loop's entry, seen 0.3 m beyond its wires.
            .replace(
                &format!("{{barrier_loop:{k}}}"),
                &(t.arrival_ms + (12.0 / (t.speed_kmh / 3.6) * 1000.0) as i64).to_string(),
            )
            .replace(
                &format!("{{gone:{k}}}"),
                &(t.arrival_ms
                    + ((t.length_m + 10.3) / (t.speed_kmh / 3.6) * 1000.0) as i64
                    + 2000)
                    .to_string(),
            );
    }
    // The firmware in QEMU keeps real time: its scenarios play at the speed they were made.
    let speed = if fault.contains("[firmware]") {
        "1.0"
    } else {
        "2.0"
    };
    let mut expect = format!(
        "# Written by acsgd_hil::scenarios (seed {seed}); regenerate with ACSGD_REGENERATE=1.\n\
         description = \"{}\"\nspeed = {speed}\n{fault}",
        plan.description
    );
    for (n, t) in trucks.iter().enumerate() {
        let (channel, reasons) = if fault.contains("wim_status = \"sensor_fault\"") {
            // The firmware marks the record invalid: the scale's own rule fails, and the
            // rules that need a valid record do not judge it.
            ("yellow", &["wim"][..])
        } else {
            verdict(t.special)
        };
        let plate = if t.special == Special::PlateUnread {
            String::new()
        } else {
            format!("plate = \"{}\"\n", t.plate_front)
        };
        expect += &format!(
            "\n[[passage]]\nlane = \"1\"\n{plate}channel = \"{channel}\"\nreasons = [{}]\n{}",
            reasons
                .iter()
                .map(|r| format!("\"{r}\""))
                .collect::<Vec<_>>()
                .join(", "),
            if plan.recovered.contains(&(n + 1)) {
                "recovered = true\n"
            } else {
                ""
            }
        );
    }
    Generated {
        name: plan.name,
        config,
        trace,
        expect,
    }
}
