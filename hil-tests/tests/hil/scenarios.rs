//! One test per scenario folder: the real binary, ptys and sockets, a real mosquitto, the
//! folder's trace played at its speed, its fault injected, its outcome checked
//! (see `acsgd_hil::run`).

fn check(name: &str) {
    let dir = acsgd_hil::scenarios_dir().join(name);
    let s = acsgd_hil::Scenario::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    let r = acsgd_hil::run(&s).unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!(
        "{name}: {} lines played, {} events at central, {} passages, tracker packets {}/{} acknowledged, bad frames injected {} counted {:?}, reopened {}, uplink drops {}, fixes {}",
        r.lines_played,
        r.events,
        r.passages.len(),
        r.tracker_acks,
        r.tracker_packets,
        r.bad_frames_injected,
        r.bad_frames_counted,
        r.reopened,
        r.uplink_drops,
        r.fixes
    );
    if r.firmware_frames > 0 {
        eprintln!(
            "{name}: {} frames from the firmware in QEMU",
            r.firmware_frames
        );
    }
    assert!(
        r.failures.is_empty(),
        "{name} ({}):\n  {}\npassages: {}\nlog tail:\n{}",
        s.expect.description,
        r.failures.join("\n  "),
        serde_json::to_string(
            &r.passages
                .iter()
                .map(|p| (
                    p["plates"].clone(),
                    p["channel"].clone(),
                    p["reasons"].clone()
                ))
                .collect::<Vec<_>>()
        )
        .unwrap(),
        r.log_tail
    );
}

macro_rules! scenario {
    ($name:ident) => {
        #[test]
        fn $name() {
            check(stringify!($name));
        }
    };
}

scenario!(clean_passage);
scenario!(overweight_axle);
scenario!(gross_over_declared);
scenario!(radiation_gamma);
scenario!(radiation_neutron);
scenario!(norm_cargo);
scenario!(seal_tampered);
scenario!(seal_silent);
scenario!(route_deviation);
scenario!(plate_unread);
scenario!(no_declaration);
scenario!(watchlist_hit);
scenario!(three_trucks_back_to_back);
scenario!(broker_down_whole_trace);
scenario!(broker_outage_mid_trace);
scenario!(sigkill_mid_passage);
scenario!(noisy_serial_line);
scenario!(serial_unplugged);
scenario!(slow_lossy_uplink);
scenario!(real_captures);
scenario!(firmware_clean_truck);
scenario!(firmware_overweight_axle);
scenario!(firmware_loop_fault);
scenario!(firmware_barrier_refused);
