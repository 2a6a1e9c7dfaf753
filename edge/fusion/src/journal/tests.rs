//! The journal file on its own: what goes in comes back, settled readings do not, a torn line
//! costs itself, and the file stays small.

use acsgd_drivers::lane::{Body, Frame};
use acsgd_drivers::rpm;

use super::file::*;
use super::*;
use crate::trackers::Change;
use crate::{Millis, PlateImage};

fn frame() -> Frame {
    Frame {
        addr: 1,
        seq: 7,
        body: Body::Axle {
            t_ms: 1234,
            vehicle: 3,
            index: 2,
            left_kg: 4100,
            right_kg: 3900,
            spacing_mm: 3600,
            speed_dkmh: 120,
        },
    }
}

fn line(text: &str) -> rpm::RpmLine {
    rpm::parse_line(text.as_bytes()).unwrap()
}

fn image() -> PlateImage {
    PlateImage {
        bbox: [10, 20, 120, 30],
        crop_jpeg: "/9j/4AAQ".into(),
    }
}

#[test]
fn what_is_recorded_comes_back_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, kept, opened) = open(dir.path(), 60_000).unwrap();
    assert!(kept.is_empty());
    assert_eq!(opened, Opened::default());
    let (f, scan, bg, tamper, img) = (
        frame(),
        line("GS,000061,000058,000064,000059"),
        line("GB,000300,000299,000301,000300"),
        line("TT"),
        image(),
    );
    j.record("1", 1000, "node", Record::Frame(&f));
    j.record("1", 1001, "rpm", Record::Rpm(&scan));
    j.record("1", 1002, "rpm", Record::Rpm(&bg));
    j.record("1", 1003, "rpm", Record::Rpm(&tamper));
    j.record(
        "2",
        1004,
        "cam",
        Record::Plate {
            text: "123ABC02",
            confidence: 0.97,
            image: Some(&img),
        },
    );
    drop(j); // killed: nothing settled
    let (j, kept, opened) = open(dir.path(), 60_000).unwrap();
    assert_eq!(opened.kept, 5);
    assert_eq!(j.live(), 5);
    let want = vec![
        Recovered {
            at: 1000,
            sensor: "node".into(),
            what: Kept::Frame(f),
        },
        Recovered {
            at: 1001,
            sensor: "rpm".into(),
            what: Kept::Rpm(scan),
        },
        Recovered {
            at: 1002,
            sensor: "rpm".into(),
            what: Kept::Rpm(bg),
        },
        Recovered {
            at: 1003,
            sensor: "rpm".into(),
            what: Kept::Rpm(tamper),
        },
        Recovered {
            at: 1004,
            sensor: "cam".into(),
            what: Kept::Plate {
                text: "123ABC02".into(),
                confidence: 0.97,
                image: Some(img),
            },
        },
    ];
    assert_eq!(kept, want);
}

#[test]
fn settled_readings_do_not_come_back_and_each_lane_settles_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _, _) = open(dir.path(), 60_000).unwrap();
    let scan = line("GS,000061,000058,000064,000059");
    let bg = line("GB,000300,000299,000301,000300");
    for at in [100, 200, 300] {
        j.record("1", at, "rpm", Record::Rpm(&scan));
        j.record("2", at, "rpm2", Record::Rpm(&scan));
    }
    j.record("1", 150, "rpm", Record::Rpm(&bg));
    j.settled("1", Some(250));
    j.settled("2", None);
    // Written after lane 2 settled, with a clock that stepped back: not settled by it.
    j.record("2", 250, "rpm2", Record::Rpm(&scan));
    drop(j);
    let (_, kept, _) = open(dir.path(), 60_000).unwrap();
    let got: Vec<(Millis, &str)> = kept.iter().map(|r| (r.at, r.sensor.as_str())).collect();
    assert_eq!(got, vec![(300, "rpm"), (150, "rpm"), (250, "rpm2")]);
}

#[test]
fn old_background_lines_are_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _, _) = open(dir.path(), 10_000).unwrap();
    let bg = line("GB,000300,000299,000301,000300");
    for s in 0..30 {
        j.record("1", s * 1000, "rpm", Record::Rpm(&bg));
    }
    j.settled("1", None);
    assert_eq!(j.live(), 11, "the last 10 s and the line at its edge");
    drop(j);
    let (_, kept, _) = open(dir.path(), 5_000).unwrap();
    assert_eq!(kept.first().map(|r| r.at), Some(24_000));
    assert_eq!(kept.len(), 6);
}

#[test]
fn a_line_cut_short_costs_itself_only() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _, _) = open(dir.path(), 60_000).unwrap();
    let scan = line("GS,000061,000058,000064,000059");
    j.record("1", 100, "rpm", Record::Rpm(&scan));
    drop(j);
    let path = dir.path().join(FILE);
    let mut text = std::fs::read(&path).unwrap();
    let whole = text.clone();
    text.extend_from_slice(&whole[..whole.len() / 2]); // a write cut by the kill
    text.extend_from_slice(b"\n{\"lane\":\"1\",\"at\":5,\"sensor\":\"x\",\"frame\":\"a55a00\"}\n");
    std::fs::write(&path, &text).unwrap();
    let (j, kept, opened) = open(dir.path(), 60_000).unwrap();
    assert_eq!(
        opened.unreadable, 2,
        "the torn line and a frame that does not decode"
    );
    assert_eq!(kept.len(), 1);
    assert_eq!(j.live(), 1);
    // The rewrite at open dropped them.
    assert_eq!(std::fs::read(&path).unwrap(), whole);
}

#[test]
fn the_file_stays_small_under_endless_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _, _) = open(dir.path(), 60_000).unwrap();
    let f = frame();
    let path = dir.path().join(FILE);
    let mut largest = 0;
    for vehicle in 0..3_000i64 {
        for k in 0..10 {
            j.record("1", vehicle * 10_000 + k * 100, "node", Record::Frame(&f));
        }
        j.settled("1", None);
        largest = largest.max(std::fs::metadata(&path).unwrap().len());
    }
    assert_eq!(j.live(), 0);
    // 30 000 frames of about 100 bytes went through it.
    assert!(largest < 400_000, "{largest}");
}

#[test]
fn a_journal_too_large_to_be_ours_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(MAX_FILE + 1).unwrap();
    let (_, kept, opened) = open(dir.path(), 60_000).unwrap();
    assert!(opened.set_aside);
    assert!(kept.is_empty());
    assert!(dir.path().join("lanes.journal.too-large").exists());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn tracker_changes_give_way_to_a_snapshot_of_the_table() {
    use crate::trackers::Trackers;
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _, _) = open(dir.path(), 60_000).unwrap();
    let mut table = Trackers::new(100);
    let mut n = 0;
    while !j.snapshot_due() {
        let c = Change::Fix {
            device: format!("dev-{}", n % 7),
            at: 1000 + n,
            time: 1000 + n,
            lat: 44.0 + n as f64 * 0.01,
            lon: 80.0,
            valid: true,
            seal: Some([n == 501, false, false, false]),
        };
        j.tracker(&c);
        table.apply(&c);
        n += 1;
    }
    assert!(n > 1000, "{n}");
    j.snapshot(table.snapshot());
    assert!(!j.snapshot_due());
    let passed = Change::Passed {
        device: "dev-3".into(),
    };
    j.tracker(&passed);
    table.apply(&passed);
    drop(j);
    let (j, kept, _) = open(dir.path(), 60_000).unwrap();
    assert_eq!(kept.len(), 1 + 7 + 1, "Clear, 7 Restores, Passed");
    assert_eq!(j.live(), kept.len());
    let mut back = Trackers::new(100);
    for r in &kept {
        match &r.what {
            Kept::Tracker(c) => back.apply(c),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(back.snapshot(), table.snapshot());
    assert!(back.get("dev-3").unwrap().flags.tamper.is_none());
    assert!(back.get("dev-3").unwrap().track.len() == 1);
    assert!(back
        .get(&format!("dev-{}", 501 % 7))
        .unwrap()
        .flags
        .tamper
        .is_some());
    // The file was rewritten: the thousand changes are gone from it.
    let lines = std::fs::read_to_string(dir.path().join(FILE))
        .unwrap()
        .lines()
        .count();
    assert!(lines < 20, "{lines}");
}
