//! Declarations and transit records in XML, for national customs systems: the schema is
//! `transit.xsd` (namespace `urn:acsgd:transit:1`, NCTS element names where NCTS has one),
//! served at `GET /api/schema/transit.xsd`.
//!
//! Reading is strict: every element the schema does not allow is refused, with quick-xml's
//! reason. What the schema's types add (the MRN's form, post ids, positive numbers, the
//! itinerary) is checked by [`Declaration::check`], the same check a JSON declaration gets, so
//! the two forms accept the same declarations. Only the default namespace is read (no
//! prefixed elements). In XML a goods item carries its description and HS code only; other
//! fields a JSON item has are not exported.

use acsgd_contract::declaration::{Corridor, Declaration, Stop};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::tracking::{time_text, Change, Transit};

/// The XML Schema, as served.
pub const XSD: &str = include_str!("transit.xsd");

/// The namespace of both documents.
pub const NAMESPACE: &str = "urn:acsgd:transit:1";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct XDeclaration {
    #[serde(rename = "@xmlns", default)]
    xmlns: Option<String>,
    #[serde(rename = "@xmlns:xsi", default)]
    _xsi: Option<String>,
    #[serde(rename = "@xsi:schemaLocation", default)]
    _location: Option<String>,
    #[serde(rename = "TransitOperation")]
    operation: XOperation,
    #[serde(rename = "CustomsOfficeOfDestinationDeclared", default)]
    destination: Option<XReference>,
    #[serde(rename = "Itinerary")]
    itinerary: XItinerary,
    #[serde(rename = "Consignment")]
    consignment: XConsignment,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct XOperation {
    #[serde(rename = "MRN")]
    mrn: String,
    #[serde(rename = "limitDate", default)]
    limit_date: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct XReference {
    #[serde(rename = "referenceNumber")]
    reference: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct XItinerary {
    #[serde(rename = "Post", default)]
    posts: Vec<XPost>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct XPost {
    #[serde(rename = "sequenceNumber")]
    sequence: u32,
    #[serde(rename = "postId")]
    post: String,
    #[serde(rename = "withinHours", default)]
    within_h: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct XConsignment {
    #[serde(rename = "grossMass", default)]
    gross_mass: Option<f64>,
    #[serde(rename = "DepartureTransportMeans", default)]
    means: Vec<XMeans>,
    #[serde(rename = "TransportEquipment", default)]
    equipment: Option<XEquipment>,
    #[serde(rename = "Corridor", default)]
    corridor: Option<XCorridor>,
    #[serde(rename = "ConsignmentItem", default)]
    items: Vec<XItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct XMeans {
    #[serde(rename = "identificationNumber")]
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct XEquipment {
    #[serde(rename = "Seal")]
    seal: XSeal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct XSeal {
    identifier: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct XCorridor {
    width: f64,
    #[serde(rename = "Point", default)]
    points: Vec<XPoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct XPoint {
    latitude: f64,
    longitude: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct XItem {
    #[serde(rename = "Commodity")]
    commodity: XCommodity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct XCommodity {
    #[serde(rename = "descriptionOfGoods", default)]
    description: Option<String>,
    #[serde(rename = "CommodityCode", default)]
    code: Option<XCode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct XCode {
    #[serde(rename = "harmonizedSystemSubHeadingCode")]
    hs: String,
}

/// Reads a `TransitDeclaration` document into the JSON form [`Declaration::parse`] takes.
pub fn declaration_from_xml(text: &str) -> Result<Value, String> {
    let root = first_element(text).ok_or("not an XML document")?;
    if root != "TransitDeclaration" {
        return Err(format!(
            "the root element is {root}, not TransitDeclaration"
        ));
    }
    let x: XDeclaration =
        quick_xml::de::from_str(text).map_err(|e| format!("TransitDeclaration: {e}"))?;
    if x.xmlns.as_deref() != Some(NAMESPACE) {
        return Err(format!(
            "TransitDeclaration: the namespace must be {NAMESPACE} (xmlns=\"{NAMESPACE}\")"
        ));
    }
    for (i, p) in x.itinerary.posts.iter().enumerate() {
        if p.sequence as usize != i + 1 {
            return Err(format!(
                "Itinerary/Post[{}]: sequenceNumber is {}, expected {}",
                i + 1,
                p.sequence,
                i + 1
            ));
        }
    }
    let c = &x.consignment;
    let mut doc = json!({
        "mrn": x.operation.mrn.trim(),
        "plates": c.means.iter().map(|m| m.id.trim()).collect::<Vec<_>>(),
        "goods": c.items.iter().map(|i| {
            let mut g = serde_json::Map::new();
            if let Some(code) = &i.commodity.code {
                g.insert("hs".into(), json!(code.hs.trim()));
            }
            if let Some(d) = &i.commodity.description {
                g.insert("description".into(), json!(d.trim()));
            }
            Value::Object(g)
        }).collect::<Vec<_>>(),
        "itinerary": x.itinerary.posts.iter().map(|p| {
            let mut s = json!({"post": p.post.trim()});
            if let Some(h) = p.within_h {
                s["within_h"] = json!(h);
            }
            s
        }).collect::<Vec<_>>(),
    });
    if let Some(t) = &x.operation.limit_date {
        doc["time_limit"] = json!(t.trim());
    }
    if let Some(d) = &x.destination {
        doc["destination"] = json!(d.reference.trim());
    }
    if let Some(g) = c.gross_mass {
        doc["gross_kg"] = json!(g);
    }
    if let Some(e) = &c.equipment {
        doc["tracker"] = json!(e.seal.identifier.trim());
    }
    if let Some(k) = &c.corridor {
        doc["corridor"] = json!({
            "width_m": k.width,
            "points": k.points.iter().map(|p| [p.latitude, p.longitude]).collect::<Vec<_>>(),
        });
    }
    Ok(doc)
}

/// The name of the document's first element, skipping the prolog and comments.
fn first_element(text: &str) -> Option<&str> {
    let mut rest = text;
    loop {
        let at = rest.find('<')?;
        rest = &rest[at + 1..];
        if rest.starts_with('?') || rest.starts_with('!') {
            continue;
        }
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
            .unwrap_or(rest.len());
        return Some(&rest[..end]);
    }
}

/// XML text escaping for element content.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

fn el(out: &mut String, indent: usize, name: &str, text: &str) {
    out.push_str(&format!("{:indent$}<{name}>{}</{name}>\n", "", esc(text)));
}

/// The body of a `TransitDeclaration` (without the element itself).
fn declaration_body(out: &mut String, d: &Declaration, i: usize) {
    let pad = |n: usize| " ".repeat(n);
    out.push_str(&format!("{}<TransitOperation>\n", pad(i)));
    el(out, i + 2, "MRN", &d.mrn);
    if let Some(t) = &d.time_limit {
        el(out, i + 2, "limitDate", t);
    }
    out.push_str(&format!("{}</TransitOperation>\n", pad(i)));
    if let Some(dest) = &d.destination {
        out.push_str(&format!("{}<CustomsOfficeOfDestinationDeclared>\n", pad(i)));
        el(out, i + 2, "referenceNumber", dest);
        out.push_str(&format!(
            "{}</CustomsOfficeOfDestinationDeclared>\n",
            pad(i)
        ));
    }
    out.push_str(&format!("{}<Itinerary>\n", pad(i)));
    for (k, Stop { post, within_h }) in d.itinerary.iter().enumerate() {
        out.push_str(&format!("{}<Post>\n", pad(i + 2)));
        el(out, i + 4, "sequenceNumber", &(k + 1).to_string());
        el(out, i + 4, "postId", post);
        if let Some(h) = within_h {
            el(out, i + 4, "withinHours", &h.to_string());
        }
        out.push_str(&format!("{}</Post>\n", pad(i + 2)));
    }
    out.push_str(&format!("{}</Itinerary>\n", pad(i)));
    out.push_str(&format!("{}<Consignment>\n", pad(i)));
    if let Some(g) = d.gross_kg {
        el(out, i + 2, "grossMass", &g.to_string());
    }
    for p in &d.plates {
        out.push_str(&format!("{}<DepartureTransportMeans>\n", pad(i + 2)));
        el(out, i + 4, "identificationNumber", p);
        out.push_str(&format!("{}</DepartureTransportMeans>\n", pad(i + 2)));
    }
    if let Some(t) = &d.tracker {
        out.push_str(&format!(
            "{}<TransportEquipment>\n{}<Seal>\n",
            pad(i + 2),
            pad(i + 4)
        ));
        el(out, i + 6, "identifier", t);
        out.push_str(&format!(
            "{}</Seal>\n{}</TransportEquipment>\n",
            pad(i + 4),
            pad(i + 2)
        ));
    }
    if let Some(Corridor { points, width_m }) = &d.corridor {
        out.push_str(&format!("{}<Corridor>\n", pad(i + 2)));
        el(out, i + 4, "width", &width_m.to_string());
        for [lat, lon] in points {
            out.push_str(&format!("{}<Point>\n", pad(i + 4)));
            el(out, i + 6, "latitude", &lat.to_string());
            el(out, i + 6, "longitude", &lon.to_string());
            out.push_str(&format!("{}</Point>\n", pad(i + 4)));
        }
        out.push_str(&format!("{}</Corridor>\n", pad(i + 2)));
    }
    for g in &d.goods {
        out.push_str(&format!(
            "{}<ConsignmentItem>\n{}<Commodity>\n",
            pad(i + 2),
            pad(i + 4)
        ));
        if let Some(desc) = g.get("description").and_then(Value::as_str) {
            el(out, i + 6, "descriptionOfGoods", desc);
        }
        if let Some(hs) = g.get("hs").and_then(Value::as_str) {
            out.push_str(&format!("{}<CommodityCode>\n", pad(i + 6)));
            el(out, i + 8, "harmonizedSystemSubHeadingCode", hs);
            out.push_str(&format!("{}</CommodityCode>\n", pad(i + 6)));
        }
        out.push_str(&format!(
            "{}</Commodity>\n{}</ConsignmentItem>\n",
            pad(i + 4),
            pad(i + 2)
        ));
    }
    out.push_str(&format!("{}</Consignment>\n", pad(i)));
}

/// A declaration as a `TransitDeclaration` document.
pub fn declaration_to_xml(d: &Declaration) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<TransitDeclaration xmlns=\"{NAMESPACE}\">\n"
    );
    declaration_body(&mut out, d, 2);
    out.push_str("</TransitDeclaration>\n");
    out
}

/// A transit's record (declaration, state, flags, journal) as a `TransitRecord` document.
pub fn record_to_xml(t: &Transit, journal: &[(i64, Change)]) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<TransitRecord xmlns=\"{NAMESPACE}\">\n  <TransitDeclaration>\n"
    );
    declaration_body(&mut out, &t.declaration, 4);
    out.push_str("  </TransitDeclaration>\n");
    el(&mut out, 2, "state", t.state.as_str());
    el(&mut out, 2, "leg", &t.leg.to_string());
    if let Some(p) = &t.expected_post {
        el(&mut out, 2, "expectedPost", p);
    }
    if let Some(ms) = t.expected_by_ms {
        el(&mut out, 2, "expectedBy", &time_text(ms));
    }
    if let Some(p) = &t.last_post {
        el(&mut out, 2, "lastPost", p);
    }
    if let Some(ms) = t.last_seen_ms {
        el(&mut out, 2, "lastSeen", &time_text(ms));
    }
    for f in &t.flags {
        el(&mut out, 2, "flag", f.as_str());
    }
    out.push_str("  <Journal>\n");
    for (at, c) in journal {
        out.push_str("    <Entry>\n");
        el(&mut out, 6, "at", &time_text(*at));
        el(&mut out, 6, "from", c.from.as_str());
        el(&mut out, 6, "to", c.to.as_str());
        el(&mut out, 6, "cause", &c.cause);
        el(&mut out, 6, "note", &c.note);
        out.push_str("    </Entry>\n");
    }
    out.push_str("  </Journal>\n</TransitRecord>\n");
    out
}

#[cfg(test)]
mod tests;
