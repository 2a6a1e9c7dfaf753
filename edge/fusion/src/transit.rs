//! Transit data from central: declarations (MRN, plates, seal, mass, goods, corridor) and the
//! watchlist, indexed for the lookups a passage needs, plus the geometry the seal rules use.
//!
//! A declaration is the contract's [`Declaration`] (central and the appliance share it).
//! The watchlist is `{"plates": [...], "trackers": [...], "mrns": [...]}`.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;
use serde_json::Value;

pub use acsgd_contract::declaration::{Corridor, Declaration, DeclarationError};

use super::plates::{self, PlateMatch};

/// Declarations held at most; a post sees a few thousand a day and central retires them.
pub const MAX_DECLARATIONS: usize = 200_000;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TransitError {
    #[error(transparent)]
    Declaration(#[from] DeclarationError),
    #[error("{MAX_DECLARATIONS} declarations held already; {0} refused")]
    Full(String),
    #[error("watchlist is not valid: {0}")]
    Watchlist(String),
}

/// A declaration found for a plate read.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub mrn: String,
    pub declared_plate: String,
    pub how: PlateMatch,
}

/// Declarations and watchlist, indexed.
#[derive(Debug, Default)]
pub struct Transit {
    by_mrn: BTreeMap<String, Declaration>,
    /// Folded plate key → MRNs declaring it.
    by_plate: HashMap<String, Vec<String>>,
    watch_plates: HashSet<String>,
    watch_trackers: HashSet<String>,
    watch_mrns: HashSet<String>,
}

impl Transit {
    /// Adds or replaces a declaration.
    pub fn upsert(&mut self, doc: &Value) -> Result<String, TransitError> {
        let d = Declaration::parse(doc)?;
        if self.by_mrn.len() >= MAX_DECLARATIONS && !self.by_mrn.contains_key(&d.mrn) {
            return Err(TransitError::Full(d.mrn));
        }
        let mrn = d.mrn.clone();
        self.remove(&mrn);
        for p in &d.plates {
            self.by_plate
                .entry(plates::index_key(p))
                .or_default()
                .push(mrn.clone());
        }
        self.by_mrn.insert(mrn.clone(), d);
        Ok(mrn)
    }

    pub fn remove(&mut self, mrn: &str) {
        if let Some(old) = self.by_mrn.remove(mrn) {
            for p in &old.plates {
                let key = plates::index_key(p);
                if let Some(v) = self.by_plate.get_mut(&key) {
                    v.retain(|m| m != mrn);
                    if v.is_empty() {
                        self.by_plate.remove(&key);
                    }
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_mrn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_mrn.is_empty()
    }

    pub fn get(&self, mrn: &str) -> Option<&Declaration> {
        self.by_mrn.get(mrn)
    }

    /// The best declaration for a read plate (exact before confusable before a missing
    /// province; ties by MRN, so the answer does not depend on arrival order).
    pub fn find(&self, read: &str) -> Option<Found> {
        let mrns = self.by_plate.get(&plates::index_key(read))?;
        mrns.iter()
            .filter_map(|m| {
                let d = self.by_mrn.get(m)?;
                d.plates
                    .iter()
                    .filter_map(|p| {
                        plates::compare(read, p).map(|how| Found {
                            mrn: m.clone(),
                            declared_plate: p.clone(),
                            how,
                        })
                    })
                    .min_by(|a, b| a.how.cmp(&b.how))
            })
            .min_by(|a, b| a.how.cmp(&b.how).then_with(|| a.mrn.cmp(&b.mrn)))
    }

    /// Replaces the watchlist.
    pub fn set_watchlist(&mut self, doc: &Value) -> Result<(), TransitError> {
        #[derive(Deserialize)]
        struct W {
            #[serde(default)]
            plates: Vec<String>,
            #[serde(default)]
            trackers: Vec<String>,
            #[serde(default)]
            mrns: Vec<String>,
        }
        let w: W = serde_json::from_value(doc.clone())
            .map_err(|e| TransitError::Watchlist(e.to_string()))?;
        self.watch_plates = w.plates.iter().map(|p| plates::index_key(p)).collect();
        self.watch_trackers = w.trackers.into_iter().collect();
        self.watch_mrns = w.mrns.into_iter().collect();
        Ok(())
    }

    /// Why a passage's identifiers are on the watchlist, if they are.
    pub fn watch_hits(
        &self,
        plates: &[&str],
        tracker: Option<&str>,
        mrn: Option<&str>,
    ) -> Vec<String> {
        let mut hits: Vec<String> = plates
            .iter()
            .filter(|p| self.watch_plates.contains(&plates::index_key(p)))
            .map(|p| format!("plate {p}"))
            .collect();
        if let Some(t) = tracker.filter(|t| self.watch_trackers.contains(*t)) {
            hits.push(format!("tracker {t}"));
        }
        if let Some(m) = mrn.filter(|m| self.watch_mrns.contains(*m)) {
            hits.push(format!("mrn {m}"));
        }
        hits
    }
}

pub use acsgd_contract::geo::{distance_m, distance_to_line_m};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decl(mrn: &str, plates: &[&str]) -> Value {
        json!({"mrn": mrn, "plates": plates, "tracker": "352093081234567", "gross_kg": 38000})
    }

    #[test]
    fn plates_find_their_declaration_tolerantly_and_deterministically() {
        let mut t = Transit::default();
        t.upsert(&decl("26KZ5500000000001A", &["123ABC02"]))
            .unwrap();
        t.upsert(&decl("26KZ5500000000002B", &["新A12345"]))
            .unwrap();
        t.upsert(&decl("26KZ5500000000003C", &["I23A8C02"]))
            .unwrap();
        let f = t.find("123 ABC 02").unwrap();
        assert_eq!(
            (f.mrn.as_str(), f.how),
            ("26KZ5500000000001A", PlateMatch::Exact)
        );
        let f = t.find("A12345").unwrap();
        assert_eq!(
            (f.mrn.as_str(), f.how),
            ("26KZ5500000000002B", PlateMatch::ProvinceMissing)
        );
        assert!(t.find("999ZZZ01").is_none());
        t.remove("26KZ5500000000001A");
        assert_eq!(t.find("123ABC02").unwrap().mrn, "26KZ5500000000003C");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn bad_declarations_are_refused_with_the_field() {
        let mut t = Transit::default();
        let cases = [
            (json!({"plates": []}), "missing field `mrn`"),
            (json!({"mrn": "short"}), "not 18 letters"),
            (
                json!({"mrn": "26KZ5500000000001A", "gross_kg": -1}),
                "gross_kg",
            ),
            (
                json!({"mrn": "26KZ5500000000001A", "corridor": {"points": [[1, 2]], "width_m": 10}}),
                "corridor.points: needs at least two",
            ),
            (
                json!({"mrn": "26KZ5500000000001A", "corridor": {"points": [[1, 2], [95, 2]], "width_m": 10}}),
                "is not lat, lon",
            ),
        ];
        for (doc, want) in cases {
            let e = t.upsert(&doc).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        }
        assert!(t.is_empty());
    }

    #[test]
    fn watchlist_hits_plates_trackers_and_mrns() {
        let mut t = Transit::default();
        t.set_watchlist(&json!({"plates": ["777 XYZ 01"], "trackers": ["42"], "mrns": []}))
            .unwrap();
        assert_eq!(
            t.watch_hits(&["777XYZ0I"], Some("42"), None),
            ["plate 777XYZ0I", "tracker 42"]
        );
        assert!(t.watch_hits(&["123ABC02"], Some("1"), Some("x")).is_empty());
        assert!(t.set_watchlist(&json!({"plates": "x"})).is_err());
    }
}
