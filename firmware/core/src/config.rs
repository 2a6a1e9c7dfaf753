//! The lane node's settings: lane geometry, calibration, thresholds, and the `key = value`
//! text the board reads them from (`node.cfg`), parsed without allocation.
//!
//! A bad file is refused with the line and the key ([`ConfigError`]), never half applied.

use core::fmt;

use crate::CELLS;

/// Everything the node needs to know about its lane. [`Config::default`] describes the lane
/// the simulator (`firmware/sim`) renders: two platforms 0.75 m long per wheel track, their
/// leading edges 1.0 m apart, inside a 4.5 m loop, and a 2 m loop under the barrier.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Node address on the RS-485 bus (1–247).
    pub addr: u8,
    /// Load-cell sample rate, Hz.
    pub sample_hz: u32,
    /// Loop gate: sample ticks per loop period count.
    pub gate_ticks: u32,
    /// Calibration, kg per ADC count, per channel (A left, A right, B left, B right).
    pub gain_kg: [f32; CELLS],
    /// Platform length in the driving direction, m.
    pub platform_m: f32,
    /// Distance between the leading edges of platforms A and B, m.
    pub platform_gap_m: f32,
    /// A wheel hit starts above this load, kg.
    pub on_kg: f32,
    /// ... and ends below this one (hysteresis), kg.
    pub off_kg: f32,
    /// Hits shorter than this are noise, ms.
    pub min_hit_ms: u32,
    /// Zero tracking: a channel is still when two half-second means in a row differ by less
    /// than this, kg.
    pub zero_band_kg: f32,
    /// Zero tracking: the most the zero may move per half-second block, kg.
    pub zero_step_kg: f32,
    /// Certified speed range, km/h.
    pub speed_min_kmh: f32,
    pub speed_max_kmh: f32,
    /// Largest speed change over the vehicle, m/s².
    pub accel_max: f32,
    /// Area and plateau estimates of a wheel may differ by this fraction.
    pub plateau_tolerance: f32,
    /// A side carrying less than this fraction of its axle is off-centre.
    pub side_min: f32,
    /// Axles further apart than this belong to two vehicles, m.
    pub max_spacing_m: f32,
    /// More axles than this under one loop detection are two vehicles close behind each other
    /// (the loop never released between them).
    pub max_axles: u8,
    /// Loop sensitivity as ΔL/L (0.0016 = 0.16 %, the usual default).
    pub loop_sensitivity: f32,
    /// While occupied the detection holds down to this fraction of the threshold
    /// (sensitivity boost: the gap between tractor and trailer keeps the call).
    pub loop_boost: f32,
    /// Consecutive gates over the threshold before a detection.
    pub loop_detect_gates: u32,
    /// Consecutive gates under the boosted threshold before a release.
    pub loop_release_gates: u32,
    /// Gates averaged to tune a loop at start and after a fault.
    pub loop_tune_gates: u32,
    /// Reference tracking while free: it moves 1/2^shift of the difference per gate.
    pub loop_track_shift: u32,
    /// Gates on the no-call side before the reference is reset at once.
    pub loop_nocall_gates: u32,
    /// A count further than this fraction from the tuned one is a faulty loop.
    pub loop_band: f32,
    /// Effective length the scale loop adds to a vehicle's occupancy, m.
    pub loop_effective_m: f32,
    /// A vehicle with no axle for this long while its loop is faulted is closed, s.
    pub vehicle_timeout_s: u32,
    /// Health frame period, s (also sent at once when faults change).
    pub health_s: u32,
    /// Status frame period, s.
    pub status_s: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: 1,
            sample_hz: 2000,
            gate_ticks: 20,
            // A 24-bit converter spanning ±10 t per wheel: 10 000 kg / 2^23.
            gain_kg: [0.001_192_092_9; CELLS],
            platform_m: 0.75,
            platform_gap_m: 1.0,
            on_kg: 150.0,
            off_kg: 75.0,
            min_hit_ms: 30,
            zero_band_kg: 5.0,
            zero_step_kg: 2.0,
            speed_min_kmh: 2.0,
            speed_max_kmh: 20.0,
            accel_max: 0.5,
            plateau_tolerance: 0.15,
            side_min: 0.3,
            max_spacing_m: 11.0,
            max_axles: 9,
            loop_sensitivity: 0.0016,
            loop_boost: 0.25,
            loop_detect_gates: 2,
            loop_release_gates: 5,
            loop_tune_gates: 50,
            loop_track_shift: 10,
            loop_nocall_gates: 10,
            loop_band: 0.25,
            loop_effective_m: 4.6,
            vehicle_timeout_s: 8,
            health_s: 10,
            status_s: 1,
        }
    }
}

/// Why a settings file was refused: the line (1-based), the key, and what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigError<'a> {
    pub line: usize,
    pub key: &'a str,
    pub kind: ConfigErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// Not `key = value`.
    Syntax,
    /// A key the node does not know.
    UnknownKey,
    /// The value does not parse as the key's type.
    BadNumber,
    /// The value parses but is outside what the key allows (line 0: only together with
    /// another key, found at the end of the file).
    OutOfRange,
}

impl fmt::Display for ConfigError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ConfigErrorKind::Syntax => "is not `key = value`",
            ConfigErrorKind::UnknownKey => "is not a setting of the lane node",
            ConfigErrorKind::BadNumber => "does not have a number of the right type",
            ConfigErrorKind::OutOfRange => "is out of range",
        };
        if self.line == 0 {
            // Found only when the whole file was read: it clashes with another setting.
            write!(f, "`{}` {what} given the other settings", self.key)
        } else {
            write!(f, "line {}: `{}` {what}", self.line, self.key)
        }
    }
}

impl Config {
    /// Reads `key = value` lines over the defaults; `#` starts a comment. `gain_kg` takes four
    /// comma-separated values.
    pub fn parse(text: &str) -> Result<Config, ConfigError<'_>> {
        let mut c = Config::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |key, kind| ConfigError {
                line: i + 1,
                key,
                kind,
            };
            let Some((key, value)) = line.split_once('=') else {
                return Err(err(line, ConfigErrorKind::Syntax));
            };
            let (key, value) = (key.trim(), value.trim());
            c.set(key, value).map_err(|kind| err(key, kind))?;
        }
        c.check().map_err(|key| ConfigError {
            line: 0,
            key,
            kind: ConfigErrorKind::OutOfRange,
        })?;
        Ok(c)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigErrorKind> {
        fn num<T: core::str::FromStr>(v: &str) -> Result<T, ConfigErrorKind> {
            v.parse().map_err(|_| ConfigErrorKind::BadNumber)
        }
        match key {
            "addr" => self.addr = num(value)?,
            "sample_hz" => self.sample_hz = num(value)?,
            "gate_ticks" => self.gate_ticks = num(value)?,
            "gain_kg" => {
                let mut parts = value.split(',');
                for g in self.gain_kg.iter_mut() {
                    *g = num(parts.next().ok_or(ConfigErrorKind::BadNumber)?.trim())?;
                }
                if parts.next().is_some() {
                    return Err(ConfigErrorKind::BadNumber);
                }
            }
            "platform_m" => self.platform_m = num(value)?,
            "platform_gap_m" => self.platform_gap_m = num(value)?,
            "on_kg" => self.on_kg = num(value)?,
            "off_kg" => self.off_kg = num(value)?,
            "min_hit_ms" => self.min_hit_ms = num(value)?,
            "zero_band_kg" => self.zero_band_kg = num(value)?,
            "zero_step_kg" => self.zero_step_kg = num(value)?,
            "speed_min_kmh" => self.speed_min_kmh = num(value)?,
            "speed_max_kmh" => self.speed_max_kmh = num(value)?,
            "accel_max" => self.accel_max = num(value)?,
            "plateau_tolerance" => self.plateau_tolerance = num(value)?,
            "side_min" => self.side_min = num(value)?,
            "max_spacing_m" => self.max_spacing_m = num(value)?,
            "max_axles" => self.max_axles = num(value)?,
            "loop_sensitivity" => self.loop_sensitivity = num(value)?,
            "loop_boost" => self.loop_boost = num(value)?,
            "loop_detect_gates" => self.loop_detect_gates = num(value)?,
            "loop_release_gates" => self.loop_release_gates = num(value)?,
            "loop_tune_gates" => self.loop_tune_gates = num(value)?,
            "loop_track_shift" => self.loop_track_shift = num(value)?,
            "loop_nocall_gates" => self.loop_nocall_gates = num(value)?,
            "loop_band" => self.loop_band = num(value)?,
            "loop_effective_m" => self.loop_effective_m = num(value)?,
            "vehicle_timeout_s" => self.vehicle_timeout_s = num(value)?,
            "health_s" => self.health_s = num(value)?,
            "status_s" => self.status_s = num(value)?,
            _ => return Err(ConfigErrorKind::UnknownKey),
        }
        // Each value is checked as it is set, so the error names its line.
        match self.check() {
            Err(k) if k == key => Err(ConfigErrorKind::OutOfRange),
            _ => Ok(()),
        }
    }

    /// The first setting out of range, by key.
    pub fn check(&self) -> Result<(), &'static str> {
        let pos = |v: f32| v.is_finite() && v > 0.0;
        let frac = |v: f32| v.is_finite() && v > 0.0 && v < 1.0;
        let rules: [(&'static str, bool); 30] = [
            ("addr", (1..=247).contains(&self.addr)),
            ("sample_hz", (500..=20_000).contains(&self.sample_hz)),
            ("gate_ticks", (1..=1000).contains(&self.gate_ticks)),
            ("gain_kg", self.gain_kg.iter().all(|g| pos(*g))),
            ("platform_m", pos(self.platform_m) && self.platform_m < 5.0),
            (
                "platform_gap_m",
                pos(self.platform_gap_m) && self.platform_gap_m < 20.0,
            ),
            ("on_kg", pos(self.on_kg)),
            ("off_kg", pos(self.off_kg) && self.off_kg <= self.on_kg),
            ("min_hit_ms", self.min_hit_ms < 10_000),
            ("zero_band_kg", pos(self.zero_band_kg)),
            ("zero_step_kg", pos(self.zero_step_kg)),
            ("speed_min_kmh", pos(self.speed_min_kmh)),
            (
                "speed_max_kmh",
                pos(self.speed_max_kmh) && self.speed_max_kmh > self.speed_min_kmh,
            ),
            ("accel_max", pos(self.accel_max)),
            ("plateau_tolerance", frac(self.plateau_tolerance)),
            ("side_min", frac(self.side_min) && self.side_min < 0.5),
            ("max_spacing_m", pos(self.max_spacing_m)),
            (
                "max_axles",
                (2..=crate::wim::MAX_AXLES).contains(&self.max_axles),
            ),
            ("loop_sensitivity", frac(self.loop_sensitivity)),
            (
                "loop_boost",
                frac(self.loop_boost) || self.loop_boost == 1.0,
            ),
            (
                "loop_detect_gates",
                (1..=1000).contains(&self.loop_detect_gates),
            ),
            (
                "loop_release_gates",
                (1..=1000).contains(&self.loop_release_gates),
            ),
            (
                "loop_tune_gates",
                (1..=10_000).contains(&self.loop_tune_gates),
            ),
            (
                "loop_track_shift",
                (1..=20).contains(&self.loop_track_shift),
            ),
            (
                "loop_nocall_gates",
                (1..=10_000).contains(&self.loop_nocall_gates),
            ),
            ("loop_band", frac(self.loop_band)),
            (
                "loop_effective_m",
                self.loop_effective_m.is_finite() && self.loop_effective_m >= 0.0,
            ),
            (
                "vehicle_timeout_s",
                (1..=3600).contains(&self.vehicle_timeout_s),
            ),
            ("health_s", (1..=3600).contains(&self.health_s)),
            ("status_s", (1..=3600).contains(&self.status_s)),
        ];
        match rules.iter().find(|(_, ok)| !ok) {
            Some((key, _)) => Err(key),
            None => Ok(()),
        }
    }

    /// Milliseconds of node time at a tick (wrapping, as the frames carry it).
    pub fn t_ms(&self, tick: u64) -> u32 {
        (tick * 1000 / self.sample_hz as u64) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_overrides_the_defaults() {
        let c = Config::parse(
            "# lane 3 at Korgas\naddr = 3\ngain_kg = 0.001, 0.0011, 0.0012 , 0.0013\n\nsample_hz=4000 # faster\n",
        )
        .unwrap();
        assert_eq!(c.addr, 3);
        assert_eq!(c.sample_hz, 4000);
        assert_eq!(c.gain_kg, [0.001, 0.0011, 0.0012, 0.0013]);
        assert_eq!(c.platform_m, Config::default().platform_m);
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let e = Config::parse("addr = 3\n\nspeed_max_kmh = fast\n").unwrap_err();
        assert_eq!(
            (e.line, e.key, e.kind),
            (3, "speed_max_kmh", ConfigErrorKind::BadNumber)
        );
        assert_eq!(
            std::format!("{e}"),
            "line 3: `speed_max_kmh` does not have a number of the right type"
        );
        let e = Config::parse("addr = 3\nwheels = 4\n").unwrap_err();
        assert_eq!(
            (e.line, e.key, e.kind),
            (2, "wheels", ConfigErrorKind::UnknownKey)
        );
        let e = Config::parse("addr = 0\n").unwrap_err();
        assert_eq!(
            (e.line, e.key, e.kind),
            (1, "addr", ConfigErrorKind::OutOfRange)
        );
        let e = Config::parse("gain_kg = 1, 2, 3\n").unwrap_err();
        assert_eq!((e.line, e.kind), (1, ConfigErrorKind::BadNumber));
        let e = Config::parse("just words\n").unwrap_err();
        assert_eq!((e.line, e.kind), (1, ConfigErrorKind::Syntax));
        let e = Config::parse("off_kg = 500\n").unwrap_err();
        assert_eq!(
            (e.line, e.key, e.kind),
            (1, "off_kg", ConfigErrorKind::OutOfRange)
        );
    }

    #[test]
    fn the_defaults_pass_their_own_check() {
        assert_eq!(Config::default().check(), Ok(()));
    }
}
