//! XML exchange through the service: a declaration sent as XML is taken, one the schema does
//! not allow is refused, and what central exports validates against the schema it serves
//! (checked by libxml2's `xmllint`, not by our own reader).

use std::path::Path;
use std::process::Command;

use acsgd::mosquitto::Mosquitto;
use acsgd_central::xml::declaration_to_xml;
use acsgd_contract::declaration::Declaration;
use serde_json::json;

use crate::common::{
    api, cli, free_port, http, http_typed, ready, start, write_config, Box_, TOKEN,
};

/// `xmllint --schema XSD DOC`: Ok, or its complaint.
fn xmllint(xsd: &Path, doc: &str, dir: &Path) -> Result<(), String> {
    let file = dir.join("doc.xml");
    std::fs::write(&file, doc).unwrap();
    let out = Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(xsd)
        .arg(&file)
        .output()
        .expect("xmllint (Debian's libxml2-utils; .ci/setup installs it)");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn declarations_come_in_as_xml_and_records_go_out_valid_against_the_served_schema() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker")).unwrap();
    let http_port = free_port();
    let db = format!("sqlite:{}", dir.path().join("central.db").display());
    let config = write_config(dir.path(), &db, broker.port(), http_port);
    for post in ["korgas", "kordai"] {
        let (ok, out) = cli(
            &config,
            &[
                "add",
                post,
                "--name",
                post,
                "--key",
                &Box_::new(post).public_hex(),
            ],
        );
        assert!(ok, "{out}");
    }
    let _central = start(&config, &dir.path().join("central.log"));
    ready(http_port);

    // The schema as served (no token needed), saved for xmllint.
    let (s, xsd) = http(http_port, "GET", "/api/schema/transit.xsd", None, None);
    assert_eq!(s, 200);
    let xsd_path = dir.path().join("transit.xsd");
    std::fs::write(&xsd_path, &xsd).unwrap();

    let d = Declaration::parse(&json!({"mrn": "26KZ5500000000009J", "plates": ["777KZA02"],
        "tracker": "352093081234567", "gross_kg": 40000,
        "goods": [{"hs": "870899", "description": "axles"}],
        "corridor": {"points": [[44.21, 80.41], [43.24, 76.89], [42.9, 74.6]], "width_m": 5000},
        "destination": "KG417000",
        "itinerary": [{"post": "korgas"}, {"post": "kordai", "within_h": 30}],
        "time_limit": "2027-01-01T00:00:00Z"}))
    .unwrap();
    let doc = declaration_to_xml(&d);
    xmllint(&xsd_path, &doc, dir.path()).expect("our own declaration is valid");
    let (s, body) = http_typed(
        http_port,
        "POST",
        "/api/declarations",
        Some(TOKEN),
        "application/xml",
        Some(&doc),
    );
    assert_eq!(s, 201, "{body}");

    // An element the schema does not have: refused by central and by xmllint alike.
    let bad = doc
        .replace("26KZ5500000000009J", "26KZ5500000000010K")
        .replace("<grossMass>", "<netMass>1</netMass><grossMass>");
    let (s, body) = http_typed(
        http_port,
        "POST",
        "/api/declarations",
        Some(TOKEN),
        "text/xml",
        Some(&bad),
    );
    assert_eq!(s, 422, "{body}");
    assert!(
        body.contains("XML: TransitDeclaration") && body.contains("netMass"),
        "{body}"
    );
    assert!(xmllint(&xsd_path, &bad, dir.path())
        .unwrap_err()
        .contains("netMass"));
    // A post not in the registry is the same refusal as in JSON.
    let (s, body) = http_typed(
        http_port,
        "POST",
        "/api/declarations",
        Some(TOKEN),
        "application/xml",
        Some(
            &doc.replace("26KZ5500000000009J", "26KZ5500000000011L")
                .replace(">kordai<", ">nowhere<"),
        ),
    );
    assert_eq!(s, 422);
    assert!(body.contains("nowhere is not a registered post"), "{body}");

    // The record, both ways.
    let (s, record) = http(
        http_port,
        "GET",
        "/api/transits/26KZ5500000000009J?format=xml",
        Some(TOKEN),
        None,
    );
    assert_eq!(s, 200);
    assert!(record.contains("<state>declared</state>"), "{record}");
    xmllint(&xsd_path, &record, dir.path()).expect("the exported record is valid");
    let (s, json) = api(http_port, "GET", "/api/transits/26KZ5500000000009J", None);
    assert_eq!(
        (s, json["declaration"]["tracker"].as_str()),
        (200, Some("352093081234567"))
    );
    assert_eq!(json["declaration"]["goods"][0]["hs"], "870899");
}
