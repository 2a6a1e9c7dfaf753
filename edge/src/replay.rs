//! `acsgd replay --config FILE TRACE`: a recorded trace through the real drivers, fusion and
//! rules in virtual time, every event as one JSON line (a sealed envelope, signed with a key
//! that exists only for this run; without `sig` with `--unsigned`) on stdout and nothing else
//! there.
//!
//! ## Trace format (DESIGN.md; read by `acsgd-trace`)
//! UTF-8 TSV, one reading per line: `offset_ms <TAB> sensor_id <TAB> encoding <TAB> payload`;
//! `# start 2026-05-14T08:00:00Z` sets the wall-clock time of offset 0, so event times are
//! those of the recording. What the payloads mean here:
//! * a camera sensor's payload is a plate read, `{"plate": "123ABC02", "confidence": 0.97}`;
//! * sensor id `@declarations` / `@watchlist` is a message from central (the JSON payload of
//!   `in/declarations`: one declaration or an array; `in/watchlist`).
//!
//! Time is the trace's: the clock jumps from line to line, nothing sleeps, and the same trace
//! and config give the same events (ids and signatures aside). Lines out of offset order are
//! fed as they come (the clock never goes back); fusion places them by their own time.
//! A line that cannot be read or decoded costs that line: it is counted per sensor and
//! summarised on stderr, never on stdout.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};

use acsgd_drivers::decode::Decoder;
use acsgd_drivers::Reading;
use serde_json::Value;

use crate::config::{Config, Protocol};
use crate::envelope::{Event, Signer};
use crate::fusion::{self, Fusion, Millis};
use acsgd_trace::{parse_line, payload, start_comment, DEFAULT_START};

/// How often (virtual time) fusion is asked to close passages.
const TICK_MS: Millis = 250;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("trace {0}: cannot read: {1}")]
    Read(String, std::io::Error),
    #[error("cannot write events: {0}")]
    Write(std::io::Error),
    #[error("{0}")]
    Key(#[from] crate::envelope::EnvelopeError),
}

/// What a replay did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub lines: u64,
    pub events: u64,
    /// Lines that could not be used, per sensor id (or `trace` for a malformed line).
    pub bad: BTreeMap<String, u64>,
    /// The first problem of each kind, for the technician.
    pub first_problems: Vec<String>,
    pub fusion: fusion::FusionStats,
}

impl Summary {
    fn bad(&mut self, who: &str, line_no: u64, problem: String) {
        *self.bad.entry(who.to_string()).or_default() += 1;
        if self.first_problems.len() < 20 {
            self.first_problems
                .push(format!("line {line_no}: {who}: {problem}"));
        }
    }
}

/// What one trace line of a sensor decoded to.
pub enum Decoded {
    Readings(Vec<Reading>),
    /// A camera's plate read: text and confidence.
    Plate(String, f64),
    Nothing,
}

impl Decoded {
    /// Hands it to fusion as arriving at `at`; returns the events it made at once.
    pub fn feed(self, fusion: &mut Fusion, at: Millis, sensor: &str) -> Vec<Event> {
        match self {
            Decoded::Readings(r) if !r.is_empty() => fusion.readings(at, sensor, &r),
            Decoded::Plate(text, confidence) => fusion.plate(at, sensor, &text, confidence),
            _ => Vec::new(),
        }
    }
}

/// One stateful decoder per sensor of a configuration, for trace payloads.
pub struct TraceDecoders {
    protocols: HashMap<String, Protocol>,
    decoders: HashMap<String, Decoder>,
}

impl TraceDecoders {
    pub fn new(config: &Config) -> TraceDecoders {
        TraceDecoders {
            protocols: config
                .sensors
                .iter()
                .map(|s| (s.id.clone(), s.protocol))
                .collect(),
            decoders: HashMap::new(),
        }
    }

    /// Decodes a line's payload for `sensor`; problems are one line each (a bad frame costs
    /// that frame, the rest of the line still decodes).
    pub fn decode(&mut self, sensor: &str, bytes: &[u8], hex: bool) -> (Decoded, Vec<String>) {
        let Some(&protocol) = self.protocols.get(sensor) else {
            return (
                Decoded::Nothing,
                vec!["no such sensor in the config".into()],
            );
        };
        let Some(driver) = crate::sensors::driver_protocol(protocol) else {
            return match fusion::parse_plate_line(&String::from_utf8_lossy(bytes)) {
                Ok((plate, conf)) => (Decoded::Plate(plate, conf), Vec::new()),
                Err(e) => (Decoded::Nothing, vec![e]),
            };
        };
        let decoder = self
            .decoders
            .entry(sensor.to_string())
            .or_insert_with(|| Decoder::new(driver));
        // Binary captures may hold several frames (or noise between them) per line.
        let decoded = if hex && !driver.is_text() {
            decoder.stream(bytes)
        } else {
            vec![decoder.packet(bytes)]
        };
        let mut readings = Vec::new();
        let mut problems = Vec::new();
        for d in decoded {
            match d {
                Ok(r) => readings.extend(r),
                Err(e) => problems.push(e),
            }
        }
        (Decoded::Readings(readings), problems)
    }
}

/// Replays a trace, writing each event to `out` as it is made.
pub struct Replayer<W: Write> {
    config: Config,
    fusion: Fusion,
    decoders: TraceDecoders,
    /// `None`: print envelopes without `sig`.
    signer: Option<Signer>,
    seq: u64,
    start: Millis,
    next_tick: Millis,
    out: W,
    pub summary: Summary,
}

impl<W: Write> Replayer<W> {
    /// A replayer; `sign` seals every envelope with a key made for this run only.
    pub fn new(config: Config, out: W, sign: bool) -> Result<Replayer<W>, ReplayError> {
        let signer = if sign {
            Some(Signer::ephemeral(&config.post)?)
        } else {
            None
        };
        Ok(Replayer {
            fusion: Fusion::new(&config.fusion_setup(), DEFAULT_START),
            decoders: TraceDecoders::new(&config),
            signer,
            seq: 0,
            start: DEFAULT_START,
            next_tick: DEFAULT_START,
            config,
            out,
            summary: Summary::default(),
        })
    }

    fn emit(&mut self, events: Vec<Event>) -> Result<(), ReplayError> {
        for e in events {
            self.seq += 1;
            let mut bytes = match &self.signer {
                Some(s) => s.seal(&e, self.seq),
                None => crate::envelope::unsigned(&e, &self.config.post, self.seq),
            };
            bytes.push(b'\n');
            self.out.write_all(&bytes).map_err(ReplayError::Write)?;
            self.summary.events += 1;
        }
        Ok(())
    }

    /// Feeds one line of the trace (`line_no` only names it in problems).
    pub fn line(&mut self, text: &str, line_no: u64) -> Result<(), ReplayError> {
        self.summary.lines += 1;
        if let Some(start) = start_comment(text) {
            match start {
                // Only before any reading: the clock cannot be moved once it has run.
                Ok(t) if self.seq == 0 && self.fusion.stats().readings == 0 => {
                    self.start = t;
                    self.next_tick = t;
                    // Declarations read before the comment stay.
                    let transit = std::mem::take(self.fusion.transit_mut());
                    self.fusion = Fusion::new(&self.config.fusion_setup(), t);
                    *self.fusion.transit_mut() = transit;
                }
                Ok(_) => self.summary.bad(
                    "trace",
                    line_no,
                    "start comment after readings; ignored".into(),
                ),
                Err(e) => self.summary.bad("trace", line_no, e),
            }
            return Ok(());
        }
        let l = match parse_line(text) {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(()),
            Err(e) => {
                self.summary.bad("trace", line_no, e);
                return Ok(());
            }
        };
        let at = self.start + l.offset_ms;
        while self.next_tick <= at {
            let ev = self.fusion.advance(self.next_tick);
            self.emit(ev)?;
            self.next_tick += TICK_MS;
        }
        let bytes = match payload(&l) {
            Ok(b) => b,
            Err(e) => {
                self.summary.bad(l.sensor, line_no, e);
                return Ok(());
            }
        };
        let events = match l.sensor {
            "@declarations" | "@watchlist" => {
                self.central(l.sensor, &bytes, line_no);
                Vec::new()
            }
            sensor => self.sensor(sensor, at, &bytes, l.hex, line_no),
        };
        self.emit(events)
    }

    fn central(&mut self, what: &str, bytes: &[u8], line_no: u64) {
        let doc: Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => return self.summary.bad(what, line_no, format!("not JSON: {e}")),
        };
        let t = self.fusion.transit_mut();
        let problems: Vec<String> = if what == "@watchlist" {
            t.set_watchlist(&doc)
                .err()
                .map(|e| e.to_string())
                .into_iter()
                .collect()
        } else {
            let docs = match doc {
                Value::Array(a) => a,
                one => vec![one],
            };
            docs.iter()
                .filter_map(|d| t.upsert(d).err().map(|e| e.to_string()))
                .collect()
        };
        for p in problems {
            self.summary.bad(what, line_no, p);
        }
    }

    fn sensor(
        &mut self,
        sensor: &str,
        at: Millis,
        bytes: &[u8],
        hex: bool,
        line_no: u64,
    ) -> Vec<Event> {
        let (decoded, problems) = self.decoders.decode(sensor, bytes, hex);
        for p in problems {
            self.summary.bad(sensor, line_no, p);
        }
        decoded.feed(&mut self.fusion, at, sensor)
    }

    /// What fusion holds in memory now.
    pub fn held(&self) -> fusion::Held {
        self.fusion.held()
    }

    /// Ends the trace: closes every open passage. Returns the summary.
    pub fn finish(mut self) -> Result<Summary, ReplayError> {
        let ev = self.fusion.advance(self.next_tick);
        self.emit(ev)?;
        let ev = self.fusion.finish();
        self.emit(ev)?;
        self.out.flush().map_err(ReplayError::Write)?;
        self.summary.fusion = self.fusion.stats().clone();
        Ok(self.summary)
    }
}

/// Replays `trace` (a file path, or `-` for stdin) to `out`.
pub fn run(
    config: Config,
    trace: &std::path::Path,
    sign: bool,
    out: impl Write,
) -> Result<Summary, ReplayError> {
    let name = trace.display().to_string();
    let reader: Box<dyn BufRead> = if name == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(trace).map_err(|e| ReplayError::Read(name.clone(), e))?,
        ))
    };
    let mut r = Replayer::new(config, std::io::BufWriter::new(out), sign)?;
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line.map_err(|e| ReplayError::Read(name.clone(), e))?;
        match std::str::from_utf8(&line) {
            Ok(text) => r.line(text, i as u64 + 1)?,
            Err(_) => r.summary.bad("trace", i as u64 + 1, "not UTF-8".into()),
        }
    }
    r.finish()
}
