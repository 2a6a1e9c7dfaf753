//! A transit declaration as central sends it to the posts (`acsgd/v1/{post}/in/declarations`)
//! and as operators submit it to central:
//!
//! ```json
//! {"mrn": "26KZ5500000000001A", "plates": ["123ABC02", "45ABC02"], "tracker": "352093081234567",
//!  "gross_kg": 38000, "goods": [{"hs": "850440", "description": "inverters"}],
//!  "corridor": {"points": [[44.21, 80.41], [43.24, 76.89]], "width_m": 5000},
//!  "destination": "KZ551100",
//!  "itinerary": [{"post": "korgas"}, {"post": "kordai", "within_h": 20}],
//!  "time_limit": "2026-12-05T12:00:00Z"}
//! ```
//!
//! `gross_kg` is the declared mass of the whole vehicle combination with its load, as it is
//! weighed. The `itinerary` is the posts the goods must pass, in order: the departure post
//! first, the destination post last, posts of transit between. `within_h` is the time allowed
//! from the previous post of the itinerary to this one; without it the leg may take until the
//! transit's `time_limit`. The appliance needs neither (it matches what it sees against the
//! declarations it holds); central needs both. Unknown fields are ignored, so either side may
//! add some before the other knows them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::mrn::valid_mrn;

/// What is wrong with a declaration document.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DeclarationError {
    #[error("declaration is not valid: {0}")]
    Invalid(String),
    #[error("declaration {0}: {1}")]
    Field(String, String),
}

/// A route corridor: a polyline and its total width.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Corridor {
    /// `[lat, lon]` points in order of travel.
    pub points: Vec<[f64; 2]>,
    /// Total width, metres; a fix further than half of it from the line is off the route.
    pub width_m: f64,
}

/// One post of an itinerary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stop {
    pub post: String,
    /// Hours allowed from the previous post to this one (none for the departure post).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_h: Option<f64>,
}

/// One transit declaration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Declaration {
    pub mrn: String,
    #[serde(default)]
    pub plates: Vec<String>,
    /// The seal / tracker device id (IMEI, EGTS terminal id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gross_kg: Option<f64>,
    #[serde(default)]
    pub goods: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corridor: Option<Corridor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The posts to pass, departure first (central's routing; the appliance ignores it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub itinerary: Vec<Stop>,
    /// RFC 3339: when the goods must have reached the destination post.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit: Option<String>,
}

/// A post id as topics carry it: `[a-z0-9-]+`, at most 64 characters.
pub fn valid_post_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Declaration {
    /// Parses and checks a declaration document.
    pub fn parse(doc: &Value) -> Result<Declaration, DeclarationError> {
        let d: Declaration = serde_json::from_value(doc.clone())
            .map_err(|e| DeclarationError::Invalid(e.to_string()))?;
        d.check()?;
        Ok(d)
    }

    /// Checks the fields serde cannot: the MRN's form, masses, coordinates, the itinerary.
    pub fn check(&self) -> Result<(), DeclarationError> {
        let field =
            |f: &str, p: String| DeclarationError::Field(self.mrn.clone(), format!("{f}: {p}"));
        if !valid_mrn(&self.mrn) {
            return Err(DeclarationError::Invalid(format!(
                "mrn {:?} is not 18 letters and digits",
                self.mrn
            )));
        }
        if let Some(g) = self.gross_kg {
            if !(g.is_finite() && g > 0.0) {
                return Err(field("gross_kg", format!("{g} is not a mass")));
            }
        }
        if let Some(c) = &self.corridor {
            if c.points.len() < 2 {
                return Err(field("corridor.points", "needs at least two points".into()));
            }
            if let Some(p) = c
                .points
                .iter()
                .find(|[la, lo]| !((-90.0..=90.0).contains(la) && (-180.0..=180.0).contains(lo)))
            {
                return Err(field("corridor.points", format!("{p:?} is not lat, lon")));
            }
            if !(c.width_m.is_finite() && c.width_m > 0.0) {
                return Err(field("corridor.width_m", "must be positive".into()));
            }
        }
        if self.itinerary.len() == 1 {
            return Err(field(
                "itinerary",
                "needs a departure and a destination post".into(),
            ));
        }
        for (i, stop) in self.itinerary.iter().enumerate() {
            if !valid_post_id(&stop.post) {
                return Err(field(
                    &format!("itinerary[{i}].post"),
                    format!("{:?} is not a post id ([a-z0-9-]+)", stop.post),
                ));
            }
            if self.itinerary[..i].iter().any(|s| s.post == stop.post) {
                return Err(field(
                    &format!("itinerary[{i}].post"),
                    format!("{} is on the itinerary twice", stop.post),
                ));
            }
            match stop.within_h {
                Some(_) if i == 0 => {
                    return Err(field(
                        "itinerary[0].within_h",
                        "the departure post has no leg before it".into(),
                    ))
                }
                Some(h) if !(h.is_finite() && h > 0.0 && h <= 24.0 * 365.0) => {
                    return Err(field(
                        &format!("itinerary[{i}].within_h"),
                        format!("{h} is not a number of hours"),
                    ))
                }
                _ => {}
            }
        }
        if let Some(t) = &self.time_limit {
            OffsetDateTime::parse(t, &Rfc3339)
                .map_err(|e| field("time_limit", format!("{t:?} is not an RFC 3339 time: {e}")))?;
        }
        Ok(())
    }

    /// The time limit, if the declaration has a valid one.
    pub fn time_limit(&self) -> Option<OffsetDateTime> {
        self.time_limit
            .as_deref()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(doc: Value) -> String {
        Declaration::parse(&doc).unwrap_err().to_string()
    }

    #[test]
    fn an_itinerary_names_posts_once_each_with_positive_legs() {
        let ok = json!({"mrn": "26KZ5500000000001A",
            "itinerary": [{"post": "korgas"}, {"post": "kordai", "within_h": 20}],
            "time_limit": "2026-12-05T12:00:00Z"});
        let d = Declaration::parse(&ok).unwrap();
        assert_eq!(d.itinerary[1].within_h, Some(20.0));
        assert!(d.time_limit().is_some());
        // What the appliance already holds (no itinerary) stays valid.
        Declaration::parse(&json!({"mrn": "26KZ5500000000001A"})).unwrap();

        let m = "26KZ5500000000001A";
        assert!(err(json!({"mrn": m, "itinerary": [{"post": "korgas"}]}))
            .contains("needs a departure and a destination"));
        assert!(
            err(json!({"mrn": m, "itinerary": [{"post": "korgas"}, {"post": "Kordai"}]}))
                .contains("itinerary[1].post: \"Kordai\" is not a post id")
        );
        assert!(
            err(json!({"mrn": m, "itinerary": [{"post": "a"}, {"post": "b"}, {"post": "a"}]}))
                .contains("a is on the itinerary twice")
        );
        assert!(
            err(json!({"mrn": m, "itinerary": [{"post": "a", "within_h": 3}, {"post": "b"}]}))
                .contains("departure post has no leg")
        );
        assert!(err(
            json!({"mrn": m, "itinerary": [{"post": "a"}, {"post": "b", "within_h": -1}]})
        )
        .contains("itinerary[1].within_h: -1 is not a number of hours"));
        assert!(err(json!({"mrn": m, "time_limit": "tomorrow"})).contains("time_limit"));
        assert!(
            err(json!({"mrn": m, "itinerary": [{"post": "a", "eta": 1}]}))
                .contains("unknown field `eta`")
        );
    }

    #[test]
    fn a_declaration_reads_back_what_it_writes() {
        let d = Declaration::parse(&json!({"mrn": "26KZ5500000000001A", "plates": ["123ABC02"],
            "gross_kg": 38000.0, "itinerary": [{"post": "a"}, {"post": "b", "within_h": 2.5}]}))
        .unwrap();
        let back = Declaration::parse(&serde_json::to_value(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }
}
