use super::*;
use crate::tracking::{Flag, State};

fn full() -> Declaration {
    Declaration::parse(&json!({
        "mrn": "26KZ5500000000001A", "plates": ["123ABC02", "45ABC02"],
        "tracker": "352093081234567", "gross_kg": 38000.5,
        "goods": [{"hs": "850440", "description": "inverters & <converters>"}, {"description": "spare parts"}],
        "corridor": {"points": [[44.21, 80.41], [43.24, 76.89]], "width_m": 5000.0},
        "destination": "KZ551100",
        "itinerary": [{"post": "korgas"}, {"post": "almaty-tt", "within_h": 20.0}, {"post": "kordai", "within_h": 8.5}],
        "time_limit": "2026-12-05T12:00:00Z"}))
    .unwrap()
}

#[test]
fn a_declaration_reads_back_from_its_xml() {
    let d = full();
    let xml = declaration_to_xml(&d);
    assert!(
        xml.contains("<descriptionOfGoods>inverters &amp; &lt;converters&gt;</descriptionOfGoods>")
    );
    let back = Declaration::parse(&declaration_from_xml(&xml).unwrap()).unwrap();
    assert_eq!(back, d);
    // A minimal one: no consignment details beyond the plate.
    let min = Declaration::parse(&json!({"mrn": "26KZ5500000000002B", "plates": ["1"],
        "itinerary": [{"post": "a"}, {"post": "b"}]}))
    .unwrap();
    let back =
        Declaration::parse(&declaration_from_xml(&declaration_to_xml(&min)).unwrap()).unwrap();
    assert_eq!(back, min);
}

#[test]
fn what_the_schema_does_not_allow_is_refused_with_its_reason() {
    let good = declaration_to_xml(&full());
    let e = declaration_from_xml(&good.replace("<grossMass>", "<netMass>1</netMass><grossMass>"))
        .unwrap_err();
    assert!(e.contains("netMass"), "{e}");
    let e = declaration_from_xml(&good.replace("TransitDeclaration", "Declaration")).unwrap_err();
    assert_eq!(e, "the root element is Declaration, not TransitDeclaration");
    let e = declaration_from_xml(&good.replace(NAMESPACE, "urn:other")).unwrap_err();
    assert!(e.contains("namespace must be urn:acsgd:transit:1"), "{e}");
    let e = declaration_from_xml(&good.replace("<sequenceNumber>2<", "<sequenceNumber>3<"))
        .unwrap_err();
    assert_eq!(e, "Itinerary/Post[2]: sequenceNumber is 3, expected 2");
    let e =
        declaration_from_xml(&good.replace("<grossMass>38000.5", "<grossMass>heavy")).unwrap_err();
    assert!(e.starts_with("TransitDeclaration:"), "{e}");
    assert!(declaration_from_xml("").is_err());
    assert!(declaration_from_xml("<TransitDeclaration").is_err());
    // The schema's patterns are the contract's checks, applied after reading.
    let doc = declaration_from_xml(&good.replace("26KZ5500000000001A", "26kz")).unwrap();
    assert!(Declaration::parse(&doc)
        .unwrap_err()
        .to_string()
        .contains("is not 18 letters and digits"));
}

#[test]
fn a_record_carries_state_flags_and_journal() {
    let mut t = Transit::declared(full(), 1_796_083_200_000);
    t.state = State::Overdue;
    t.flags.insert(Flag::SealTamper);
    t.expected_by_ms = Some(1_796_155_200_000);
    let log = vec![(
        1_796_155_300_000,
        Change {
            from: State::Departed,
            to: State::Overdue,
            cause: "scheduler".into(),
            note: "not seen at almaty-tt by …".into(),
        },
    )];
    let xml = record_to_xml(&t, &log);
    assert!(xml.contains("<state>overdue</state>"));
    assert!(xml.contains("<flag>seal_tamper</flag>"));
    assert!(xml.contains("<expectedBy>2026-12-01T20:00:00.000Z</expectedBy>"));
    assert!(xml.contains("<cause>scheduler</cause>"));
}
