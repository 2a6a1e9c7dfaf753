//! A camera sensor read by the appliance itself: the capture loop, driven by its lane's
//! occupancy, that turns a vehicle's frames into one plate read.
//!
//! While the lane's presence sensor (loops, or the portal) says a vehicle is there, every
//! frame is read; when the vehicle has gone, the reads vote ([`acsgd_anpr::vote`]) and the winner
//! goes to fusion with the box and JPEG crop of its most confident frame. On a lane without a
//! presence sensor every frame is read and a plate unseen for `anpr.gap_s` has left. The
//! read's time is that of the frame that saw the plate first (front camera), last (rear
//! camera) or best, so fusion places it on the right vehicle.
//!
//! The loop runs on a blocking thread: inference never runs on the async runtime. A stream
//! that fails is reopened after `anpr.retry_s`, doubling to a minute; a video file that ends
//! ends the loop. A stream's first frame warms the reader up and is not counted
//! ([`Loop::warm_up`]).
//!
//! The camera's health is reported as component `sensor/<id>` (a `health` event on every
//! change, shown on the technician page): down while its stream cannot be opened, fails or
//! has ended, degraded while frames cannot be read (the runtime or the models fail), up again
//! once it reads. Models that cannot be loaded at start are reported by [`crate::sensors`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::sync::watch;

use acsgd_drivers::transport::Stats;

use crate::config::{Anpr, Sensor, View};
use crate::fusion::{Millis, PlateImage};
use crate::health::{Health, State};
use crate::live::Locked as _;
use crate::live::{self, Shared};
use crate::outbox::Outbox;
use acsgd_anpr::models::{init_runtime, ModelSource};
use acsgd_anpr::pipeline::{jpeg, PlateFound, Reader};
use acsgd_anpr::source::Source;
use acsgd_anpr::vote::vote;
use acsgd_anpr::AnprError;

/// One frame's plate ([`frame_plate`]), kept for the vote.
struct Kept {
    at: Millis,
    plate: PlateFound,
}

/// The reads of the vehicle in front of the camera now.
#[derive(Default)]
struct Vehicle {
    reads: Vec<Kept>,
    frames: usize,
}

/// Where a camera's reads and health go.
pub struct Outputs {
    pub fusion: Shared,
    pub outbox: Outbox,
    pub health: Arc<Health>,
}

/// Opens the models and starts the capture loop of camera `sensor` reading `url`.
pub fn spawn(
    sensor: &Sensor,
    url: &str,
    settings: &Anpr,
    to: Outputs,
    stop: watch::Receiver<bool>,
    stats: Arc<Stats>,
) -> Result<tokio::task::JoinHandle<()>, AnprError> {
    let Outputs {
        fusion,
        outbox,
        health,
    } = to;
    let env = init_runtime(settings.onnxruntime.as_deref())?;
    let mut reader = Reader::new(
        &env,
        &ModelSource {
            dir: settings.models.clone(),
            threads: settings.threads,
            spin: settings.spin,
        },
    )?;
    reader.largest_look = settings.largest_look;
    let handle = tokio::runtime::Handle::current();
    let lp = Loop {
        sensor: sensor.id.clone(),
        url: url.to_string(),
        view: sensor.view,
        settings: settings.clone(),
        fusion,
        outbox,
        health,
        component: crate::sensors::component(&sensor.id),
        stats,
        reader,
        handle,
    };
    Ok(tokio::task::spawn_blocking(move || lp.run(stop)))
}

struct Loop {
    sensor: String,
    url: String,
    view: Option<View>,
    settings: Anpr,
    fusion: Shared,
    outbox: Outbox,
    health: Arc<Health>,
    /// `sensor/<id>`.
    component: String,
    stats: Arc<Stats>,
    reader: Reader,
    handle: tokio::runtime::Handle,
}

impl Loop {
    /// Reports the camera's state (an event only when it changed).
    fn health(&self, state: State, reason: &str) {
        self.handle
            .block_on(self.health.report(&self.component, state, reason));
    }

    fn run(mut self, stop: watch::Receiver<bool>) {
        let mut source: Option<Source> = None;
        let mut retry = Duration::from_secs_f64(self.settings.retry_s);
        let mut vehicle = Vehicle::default();
        let mut was_active = false;
        let mut last_seen: Millis = 0;
        while !*stop.borrow() {
            let src = match source.as_mut() {
                Some(s) => s,
                None => match Source::open(&self.url, true) {
                    Ok(s) => {
                        tracing::info!(sensor = %self.sensor, url = %self.url, "camera opened");
                        self.health(State::Up, "stream open");
                        retry = Duration::from_secs_f64(self.settings.retry_s);
                        let s = source.insert(s);
                        self.warm_up(s);
                        s
                    }
                    Err(e) => {
                        tracing::warn!(sensor = %self.sensor, "{e}; retrying in {retry:?}");
                        self.health(State::Down, &format!("stream cannot be opened: {e}"));
                        self.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                        sleep_unless_stopped(retry, &stop);
                        retry = (retry * 2).min(Duration::from_secs(60));
                        continue;
                    }
                },
            };
            let frame = match src.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => {
                    // The last vehicle's reads go to fusion before the end is said, so
                    // whoever waits for "video ended" finds them there.
                    self.finish(std::mem::take(&mut vehicle));
                    tracing::info!(sensor = %self.sensor, "video ended");
                    self.health(State::Down, "video ended");
                    break;
                }
                Err(e) => {
                    tracing::warn!(sensor = %self.sensor, "{e}; reopening");
                    self.health(State::Down, &format!("stream failed: {e}"));
                    self.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                    source = None;
                    continue;
                }
            };
            self.stats.frames.fetch_add(1, Ordering::Relaxed);
            let now = live::now();
            let occupied = self.fusion.locked().occupied(&self.sensor, now);
            let active = occupied.unwrap_or(true);
            if active && vehicle.frames < self.settings.max_frames {
                vehicle.frames += 1;
                match self.reader.read(&frame) {
                    Ok(plates) => {
                        self.health(State::Up, "reading frames");
                        if let Some(best) = frame_plate(plates, self.settings.min_confidence) {
                            last_seen = now;
                            vehicle.reads.push(Kept {
                                at: now,
                                plate: best,
                            });
                        }
                    }
                    Err(e) => {
                        self.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(sensor = %self.sensor, "frame not read: {e}");
                        self.health(State::Degraded, &format!("frame not read: {e}"));
                    }
                }
            }
            let gone = match occupied {
                Some(_) => was_active && !active,
                None => {
                    !vehicle.reads.is_empty()
                        && now - last_seen > (self.settings.gap_s * 1000.0) as Millis
                }
            };
            if gone {
                self.finish(std::mem::take(&mut vehicle));
            }
            was_active = active;
        }
        // What was seen of the last vehicle still counts (on a stop; an ended video's went
        // before).
        self.finish(vehicle);
    }

    /// Reads the first frame of a stream just opened and drops the read: a reader's first
    /// pass over a frame size costs several of its later ones (ONNX Runtime plans and
    /// allocates for each new input shape: 1.5 s against 0.3 s on the test video's first
    /// frame, Zen 3), and a file, played at its pace, would skip the frames that went by
    /// meanwhile, a vehicle's with them (a 4-second pass under a loaded machine: all of
    /// it). The file's pace restarts after it; a live stream's frames are not held back by
    /// this, as its buffer is the camera's. A frame that cannot be had or read is left to
    /// the loop, which reports it.
    fn warm_up(&mut self, src: &mut Source) {
        let t = std::time::Instant::now();
        if let Ok(Some(frame)) = src.next_frame() {
            let read = self.reader.read(&frame);
            tracing::debug!(sensor = %self.sensor, ms = t.elapsed().as_millis() as u64, ok = read.is_ok(), "reader warmed up on the first frame");
        }
        src.resync();
    }

    /// Votes over a vehicle's reads and hands the winner to fusion.
    fn finish(&mut self, vehicle: Vehicle) {
        if vehicle.reads.is_empty() {
            return;
        }
        let texts: Vec<(String, f32)> = vehicle
            .reads
            .iter()
            .map(|k| (k.plate.text.clone(), k.plate.confidence))
            .collect();
        let Some(v) = vote(&texts, 2) else {
            tracing::info!(sensor = %self.sensor, reads = texts.len(), "no valid plate among the reads");
            return;
        };
        let agreeing: Vec<&Kept> = vehicle
            .reads
            .iter()
            // Reads come out of the pipeline already corrected.
            .filter(|k| k.plate.text == v.plate.text)
            .collect();
        let Some(best) = agreeing
            .iter()
            .max_by(|a, b| a.plate.confidence.total_cmp(&b.plate.confidence))
        else {
            return;
        };
        let at = match self.view {
            Some(View::Front) => agreeing.iter().map(|k| k.at).min(),
            Some(View::Rear) => agreeing.iter().map(|k| k.at).max(),
            None => Some(best.at),
        }
        .unwrap_or(best.at);
        let image = match jpeg(&best.plate.crop, 85) {
            Ok(bytes) => Some(PlateImage {
                bbox: best.plate.bbox,
                crop_jpeg: base64::engine::general_purpose::STANDARD.encode(bytes),
            }),
            Err(e) => {
                tracing::warn!(sensor = %self.sensor, "crop not encoded: {e}");
                None
            }
        };
        tracing::info!(sensor = %self.sensor, plate = %v.plate.text, confidence = v.confidence, agreeing = v.agreeing, valid = v.valid, "plate read");
        let events = self.fusion.locked().plate_seen(
            at,
            &self.sensor,
            &v.plate.text,
            v.confidence as f64,
            image,
        );
        if !events.is_empty() {
            for r in self.handle.block_on(self.outbox.append_many(events)) {
                if let Err(e) = r {
                    tracing::error!(sensor = %self.sensor, "event not stored: {e}");
                }
            }
        }
    }
}

/// The plate a frame gives the vote: its most confident read that fits a plate format, at
/// `min_confidence` or more. A read that fits none (`country` `None`: the recogniser's
/// decoder found no plate format in it) is left out even where it is more confident: it is
/// mostly text beside the plate (a camera's date and time printed into the picture, a
/// make, a sign), the vote would drop it, and kept it would have cost the frame its plate.
fn frame_plate(plates: Vec<PlateFound>, min_confidence: f32) -> Option<PlateFound> {
    plates
        .into_iter()
        .filter(|p| p.country.is_some() && p.confidence >= min_confidence)
        .max_by(|a, b| a.confidence.total_cmp(&b.confidence))
}

fn sleep_unless_stopped(d: Duration, stop: &watch::Receiver<bool>) {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end && !*stop.borrow() {
        std::thread::sleep(Duration::from_millis(100).min(end - std::time::Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::Mat;

    fn found(text: &str, country: Option<&'static str>, confidence: f32) -> PlateFound {
        PlateFound {
            text: text.into(),
            country,
            confidence,
            bbox: [0, 0, 10, 10],
            crop: Mat::default(),
        }
    }

    #[test]
    fn a_frame_gives_its_likeliest_plate_not_the_text_beside_it() {
        // The date a camera prints into its pictures, read more surely than the plate.
        let frame = vec![
            found("2015O511", None, 0.34),
            found("123ABC02", Some("KZ"), 0.3),
            found("456DEF02", Some("KZ"), 0.25),
        ];
        assert_eq!(
            frame_plate(frame, 0.2).map(|p| p.text),
            Some("123ABC02".into())
        );
        // Below the least confidence, or only text that is no plate: nothing.
        let frame = vec![
            found("123ABC02", Some("KZ"), 0.1),
            found("2015O511", None, 0.9),
        ];
        assert!(frame_plate(frame, 0.2).is_none());
    }
}
