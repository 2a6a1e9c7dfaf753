//! What the screen shows, kept up to date from the events the outbox accepted: recent
//! passages per lane, alerts and their acknowledgements, verdict overrides, component health.
//!
//! Only events on disk reach the board, so the screen never shows what the appliance could
//! still lose. An acknowledgement is itself an `ack` event: the handler appends it, and the
//! board marks the alert once it is accepted. The board is mirrored into the store's
//! `display` tree so that passages and open alerts survive a restart (the outbox forgets
//! events once central has them).

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde_json::{json, Value};

use acsgd_outbox::{Fed, KvTree};

/// Passages kept per lane.
pub const PASSAGES_PER_LANE: usize = 20;
/// Alerts kept at most; acknowledged ones go first.
pub const MAX_ALERTS: usize = 500;
/// Acknowledged alerts kept for the screen's history.
pub const ACKED_KEPT: usize = 50;
/// Health components tracked at most.
const MAX_COMPONENTS: usize = 256;

/// A change the screens must hear about.
#[derive(Debug, Clone)]
pub struct Update {
    /// `passage`, `alert`, `ack`, `override` or `health`.
    pub kind: &'static str,
    pub data: Value,
    /// Carries passage data (technicians do not get it).
    pub passage_data: bool,
}

/// Why an alert cannot be acknowledged (or a verdict overridden) now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Already,
}

pub struct Board {
    lanes: Vec<(String, VecDeque<Value>)>,
    /// By `seq`.
    alerts: BTreeMap<u64, Value>,
    health: BTreeMap<String, Value>,
    /// Alerts (event ids) whose `ack` is being written.
    acking: HashSet<String>,
    tree: KvTree,
}

fn item(f: &Fed) -> Value {
    json!({"event": f.id, "seq": f.seq, "time": f.time, "accepted_ms": f.accepted_ms, "body": f.body})
}

fn passage_key(lane: &str, seq: u64) -> String {
    format!("p/{lane}/{seq:020}")
}

fn seq_of(v: &Value) -> u64 {
    v["seq"].as_u64().unwrap_or(0)
}

impl Board {
    /// Loads what the last run left in `tree`, for the configured lanes.
    pub fn load(tree: KvTree, lanes: &[String]) -> Board {
        let mut b = Board {
            lanes: lanes.iter().map(|l| (l.clone(), VecDeque::new())).collect(),
            alerts: BTreeMap::new(),
            health: BTreeMap::new(),
            acking: HashSet::new(),
            tree,
        };
        let stored = b.tree.entries().unwrap_or_else(|e| {
            tracing::error!(error = %e, "display: cannot read the stored board");
            Vec::new()
        });
        for (k, v) in stored {
            let Ok(v) = serde_json::from_slice::<Value>(&v) else {
                continue;
            };
            let k = String::from_utf8_lossy(&k).into_owned();
            if let Some(rest) = k.strip_prefix("p/") {
                let lane = rest.rsplit_once('/').map_or("", |(l, _)| l);
                if let Some((_, q)) = b.lanes.iter_mut().find(|(id, _)| id == lane) {
                    q.push_back(v);
                }
            } else if k.starts_with("a/") {
                b.alerts.insert(seq_of(&v), v);
            } else if let Some(c) = k.strip_prefix("h/") {
                b.health.insert(c.to_string(), v);
            }
        }
        b
    }

    /// Takes one accepted event; returns what changed on the screen.
    pub fn apply(&mut self, f: &Fed) -> Option<Update> {
        match f.kind.as_str() {
            "passage" => {
                let lane = f.body["lane"].as_str()?.to_string();
                let it = item(f);
                let (_, q) = self.lanes.iter_mut().find(|(id, _)| *id == lane)?;
                if q.iter().any(|p| p["event"] == f.id.as_str()) {
                    return None;
                }
                q.push_back(it.clone());
                let _ = self
                    .tree
                    .insert(passage_key(&lane, f.seq), it.to_string().as_bytes());
                while q.len() > PASSAGES_PER_LANE {
                    if let Some(old) = q.pop_front() {
                        let _ = self.tree.remove(passage_key(&lane, seq_of(&old)));
                    }
                }
                Some(Update {
                    kind: "passage",
                    data: it,
                    passage_data: true,
                })
            }
            "alert" => {
                // A producer that retried after a lost answer can store the same event (same
                // id) twice: the screen shows it once, so it can be acknowledged once.
                if self.alerts.values().any(|a| a["event"] == f.id.as_str()) {
                    return None;
                }
                let mut it = item(f);
                it["ack"] = Value::Null;
                self.put_alert(it.clone());
                self.trim_alerts();
                Some(Update {
                    kind: "alert",
                    data: it,
                    passage_data: true,
                })
            }
            "ack" => {
                let target = f.body["alert"].as_str()?;
                self.acking.remove(target);
                let (_, a) = self.alerts.iter_mut().find(|(_, a)| a["event"] == target)?;
                if !a["ack"].is_null() {
                    return None;
                }
                let mut ack = f.body.clone();
                ack["event"] = json!(f.id);
                ack["time"] = json!(f.time);
                a["ack"] = ack;
                let a = a.clone();
                self.put_alert(a.clone());
                self.trim_alerts();
                Some(Update {
                    kind: "ack",
                    data: a,
                    passage_data: true,
                })
            }
            "override" => {
                let target = f.body["passage"].as_str()?;
                self.acking.remove(target);
                let lane = f.body["lane"].as_str()?;
                let (_, q) = self.lanes.iter_mut().find(|(id, _)| id == lane)?;
                let p = q.iter_mut().find(|p| p["body"]["id"] == target)?;
                let mut o = f.body.clone();
                o["event"] = json!(f.id);
                o["time"] = json!(f.time);
                p["override"] = o;
                let p = p.clone();
                let _ = self
                    .tree
                    .insert(passage_key(lane, seq_of(&p)), p.to_string().as_bytes());
                Some(Update {
                    kind: "override",
                    data: p,
                    passage_data: true,
                })
            }
            "health" => {
                let c = f.body["component"].as_str()?.to_string();
                if !self.health.contains_key(&c) && self.health.len() >= MAX_COMPONENTS {
                    return None;
                }
                let h = json!({"component": c, "state": f.body["state"], "reason": f.body["reason"], "time": f.time});
                let _ = self.tree.insert(format!("h/{c}"), h.to_string().as_bytes());
                self.health.insert(c, h.clone());
                Some(Update {
                    kind: "health",
                    data: h,
                    passage_data: false,
                })
            }
            _ => None,
        }
    }

    fn put_alert(&mut self, a: Value) {
        let seq = seq_of(&a);
        let _ = self
            .tree
            .insert(format!("a/{seq:020}"), a.to_string().as_bytes());
        self.alerts.insert(seq, a);
    }

    /// Keeps the last [`ACKED_KEPT`] acknowledged alerts and at most [`MAX_ALERTS`] in all;
    /// open alerts go only when there are more than that many of them.
    fn trim_alerts(&mut self) {
        let acked: Vec<u64> = self
            .alerts
            .iter()
            .filter(|(_, a)| !a["ack"].is_null())
            .map(|(s, _)| *s)
            .collect();
        let mut drop: Vec<u64> = acked[..acked.len().saturating_sub(ACKED_KEPT)].to_vec();
        let mut left = self.alerts.len() - drop.len();
        for s in self.alerts.keys() {
            if left <= MAX_ALERTS {
                break;
            }
            if !drop.contains(s) {
                drop.push(*s);
                left -= 1;
            }
        }
        if left > MAX_ALERTS {
            tracing::warn!(
                "display: more than {MAX_ALERTS} open alerts; the oldest leave the screen"
            );
        }
        for s in drop {
            self.alerts.remove(&s);
            let _ = self.tree.remove(format!("a/{s:020}"));
        }
    }

    /// Reserves an alert for acknowledgement; returns it. [`Board::release`] undoes it when
    /// the `ack` event could not be stored.
    pub fn claim_alert(&mut self, event: &str) -> Result<Value, Refusal> {
        let a = self
            .alerts
            .values()
            .find(|a| a["event"] == event)
            .ok_or(Refusal::Unknown)?;
        if !a["ack"].is_null() || self.acking.contains(event) {
            return Err(Refusal::Already);
        }
        let a = a.clone();
        self.acking.insert(event.to_string());
        Ok(a)
    }

    /// Reserves a passage (by its body id) for an override; returns it.
    pub fn claim_passage(&mut self, id: &str) -> Result<Value, Refusal> {
        let p = self
            .lanes
            .iter()
            .flat_map(|(_, q)| q.iter())
            .find(|p| p["body"]["id"] == id)
            .ok_or(Refusal::Unknown)?;
        if self.acking.contains(id) {
            return Err(Refusal::Already);
        }
        let p = p.clone();
        self.acking.insert(id.to_string());
        Ok(p)
    }

    pub fn release(&mut self, id: &str) {
        self.acking.remove(id);
    }

    /// Everything a screen needs when it connects; without passage data for technicians.
    pub fn snapshot(&self, passages: bool) -> Value {
        let mut s = json!({"health": self.health.values().collect::<Vec<_>>()});
        s["lanes"] = self
            .lanes
            .iter()
            .map(|(id, q)| {
                let list: Vec<&Value> = if passages {
                    q.iter().rev().collect()
                } else {
                    Vec::new()
                };
                json!({"id": id, "passages": list})
            })
            .collect();
        if passages {
            s["alerts"] = json!(self.alerts.values().rev().collect::<Vec<_>>());
        }
        s
    }

    #[cfg(test)]
    fn snapshot_alerts(&self) -> Vec<&Value> {
        self.alerts.values().collect()
    }

    /// An officer's chosen language, if they chose one.
    pub fn lang(&self, user: &str) -> Option<String> {
        let v = self.tree.get(format!("lang/{user}")).ok()??;
        Some(String::from_utf8_lossy(&v).into_owned())
    }

    pub fn set_lang(&self, user: &str, lang: &str) {
        let _ = self.tree.insert(format!("lang/{user}"), lang.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use acsgd_outbox::{OpenMode, Store};

    fn fed(seq: u64, kind: &str, body: Value) -> Fed {
        Fed {
            seq,
            id: format!("ev-{seq}"),
            kind: kind.into(),
            time: "2026-11-22T08:00:00.000Z".into(),
            body,
            accepted_ms: 1,
        }
    }

    fn board(dir: &std::path::Path) -> (std::sync::Arc<Store>, Board) {
        let (store, _) = Store::open(dir, 1 << 20, OpenMode::Service).unwrap();
        let store = std::sync::Arc::new(store);
        let b = Board::load(store.tree("display").unwrap(), &["1".into(), "2".into()]);
        (store, b)
    }

    #[test]
    fn an_event_stored_twice_under_one_id_is_shown_once_and_acked_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, mut b) = board(dir.path());
        let body = json!({"rule": "radiation.gamma", "lane": "1"});
        let mut first = fed(7, "alert", body.clone());
        first.id = "retried".into();
        let mut again = fed(8, "alert", body);
        again.id = "retried".into();
        assert!(b.apply(&first).is_some());
        assert!(b.apply(&again).is_none(), "the retry's copy is not shown");
        assert_eq!(b.snapshot_alerts().len(), 1);
        b.claim_alert("retried").unwrap();
        let passage = json!({"lane": "1", "id": "p-1"});
        let mut p1 = fed(9, "passage", passage.clone());
        p1.id = "pass-retried".into();
        let mut p2 = fed(10, "passage", passage);
        p2.id = "pass-retried".into();
        assert!(b.apply(&p1).is_some());
        assert!(b.apply(&p2).is_none());
    }

    #[test]
    fn passages_alerts_and_acks_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_store, mut b) = board(dir.path());
            for s in 1..=25 {
                let u = b
                    .apply(&fed(
                        s,
                        "passage",
                        json!({"id": format!("1-{s}"), "lane": "1"}),
                    ))
                    .unwrap();
                assert_eq!(u.kind, "passage");
            }
            assert!(b
                .apply(&fed(26, "passage", json!({"id": "9-1", "lane": "9"})))
                .is_none());
            b.apply(&fed(
                30,
                "alert",
                json!({"rule": "gross_mass", "lane": "1", "passage": "1-25"}),
            ));
            b.apply(&fed(
                31,
                "alert",
                json!({"rule": "radiation_gamma", "lane": "1"}),
            ));
            assert_eq!(b.claim_alert("ev-30").unwrap()["seq"], 30);
            assert_eq!(b.claim_alert("ev-30").unwrap_err(), Refusal::Already);
            assert_eq!(b.claim_alert("ev-99").unwrap_err(), Refusal::Unknown);
            let u = b
                .apply(&fed(
                    32,
                    "ack",
                    json!({"alert": "ev-30", "decision": "released", "officer": "aserik"}),
                ))
                .unwrap();
            assert_eq!(u.data["ack"]["officer"], "aserik");
            // A second ack of the same alert changes nothing.
            assert!(b
                .apply(&fed(
                    33,
                    "ack",
                    json!({"alert": "ev-30", "decision": "inspection"})
                ))
                .is_none());
            b.claim_passage("1-25").unwrap();
            let u = b
                .apply(&fed(
                    34,
                    "override",
                    json!({"passage": "1-25", "lane": "1", "to": "green"}),
                ))
                .unwrap();
            assert_eq!(u.data["override"]["to"], "green");
            b.apply(&fed(
                35,
                "health",
                json!({"component": "rpm-1", "state": "down", "reason": "silent"}),
            ));
            b.set_lang("aserik", "kk");
        }
        let (_store, b) = board(dir.path());
        let s = b.snapshot(true);
        let lane1 = s["lanes"][0]["passages"].as_array().unwrap();
        assert_eq!(lane1.len(), PASSAGES_PER_LANE);
        assert_eq!(lane1[0]["body"]["id"], "1-25");
        assert_eq!(lane1[0]["override"]["to"], "green");
        assert_eq!(lane1.last().unwrap()["body"]["id"], "1-6");
        let alerts = s["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 2);
        assert!(alerts[0]["ack"].is_null());
        assert_eq!(alerts[1]["ack"]["decision"], "released");
        assert_eq!(s["health"][0]["state"], "down");
        assert_eq!(b.lang("aserik").as_deref(), Some("kk"));
        // Technicians get health, not passages or alerts.
        let t = b.snapshot(false);
        assert!(t["lanes"][0]["passages"].as_array().unwrap().is_empty());
        assert!(t.get("alerts").is_none());
    }

    #[test]
    fn acknowledged_alerts_leave_first_and_open_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, mut b) = board(dir.path());
        let mut seq = 0;
        for i in 0..MAX_ALERTS + 100 {
            seq += 1;
            b.apply(&fed(seq, "alert", json!({"rule": "wim", "lane": "1"})));
            if i % 2 == 0 {
                let id = format!("ev-{seq}");
                seq += 1;
                b.apply(&fed(
                    seq,
                    "ack",
                    json!({"alert": id, "decision": "false_alarm"}),
                ));
            }
        }
        let s = b.snapshot(true);
        let alerts = s["alerts"].as_array().unwrap();
        let open = alerts.iter().filter(|a| a["ack"].is_null()).count();
        assert_eq!(open, (MAX_ALERTS + 100) / 2);
        assert_eq!(alerts.len() - open, ACKED_KEPT);
    }
}
