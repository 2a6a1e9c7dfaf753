//! Frame sources. One URL names where a camera's frames come from:
//!
//! | URL | read by |
//! |---|---|
//! | `rtsp://…` | opencv `VideoCapture` (FFmpeg backend) |
//! | `/dev/video0`, `v4l2:///dev/video0` | `VideoCapture` (V4L2 backend) |
//! | `file:///path/to/video.avi`, `/path/to/video.avi` | `VideoCapture`; played at its own frame rate |
//! | `http://host/snapshot.jpg` | one HTTP GET per frame, the JPEG decoded by opencv |
//!
//! A stream that fails is the caller's to reopen (the appliance's camera loop backs off and retries);
//! a video file that ends is the end of the source.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use opencv::core::Mat;
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};

use super::AnprError;

/// The largest snapshot accepted.
pub const MAX_SNAPSHOT: usize = 16 << 20;

/// An open frame source.
pub enum Source {
    Capture {
        url: String,
        cap: VideoCapture,
        /// A video file: its end is the end of the source, not a stream failure.
        file: bool,
        /// For a file played at its frame rate: the interval that rate gives, and when the
        /// last frame was due (`None`: the next frame is due now, with none skipped).
        pace: Option<(Duration, Option<Instant>)>,
    },
    Snapshot {
        url: String,
        host: String,
        port: u16,
        path: String,
        timeout: Duration,
    },
}

fn err(url: &str, problem: impl ToString) -> AnprError {
    AnprError::Source {
        source_url: url.to_string(),
        problem: problem.to_string(),
    }
}

impl Source {
    /// Opens the source a URL names. `realtime`: play files at their frame rate (a live
    /// camera's pace) rather than as fast as they decode.
    pub fn open(url: &str, realtime: bool) -> Result<Source, AnprError> {
        if let Some(rest) = url.strip_prefix("http://") {
            let (hostport, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let (host, port) = match hostport.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| err(url, "bad port"))?),
                None => (hostport, 80),
            };
            return Ok(Source::Snapshot {
                url: url.to_string(),
                host: host.to_string(),
                port,
                path: path.to_string(),
                timeout: Duration::from_secs(5),
            });
        }
        if url.starts_with("https://") {
            return Err(err(
                url,
                "HTTPS snapshots are not supported: use the camera's plain HTTP on its own LAN, or RTSP",
            ));
        }
        let (target, api, file) = if url.starts_with("rtsp://") || url.starts_with("rtsps://") {
            (url, videoio::CAP_FFMPEG, false)
        } else if let Some(dev) = url.strip_prefix("v4l2://") {
            (dev, videoio::CAP_V4L2, false)
        } else if url.starts_with("/dev/video") {
            (url, videoio::CAP_V4L2, false)
        } else {
            let path = url.strip_prefix("file://").unwrap_or(url);
            if !std::path::Path::new(path).is_file() {
                return Err(err(url, "no such file"));
            }
            (path, videoio::CAP_ANY, true)
        };
        let cap = VideoCapture::from_file(target, api).map_err(|e| err(url, e))?;
        if !cap.is_opened().map_err(|e| err(url, e))? {
            return Err(err(url, "could not be opened"));
        }
        let pace = if file && realtime {
            let fps = cap.get(videoio::CAP_PROP_FPS).unwrap_or(0.0);
            let fps = if fps.is_finite() && fps > 0.5 {
                fps
            } else {
                10.0
            };
            Some((Duration::from_secs_f64(1.0 / fps), None))
        } else {
            None
        };
        Ok(Source::Capture {
            url: url.to_string(),
            cap,
            file,
            pace,
        })
    }

    /// Plays a file on from now: its next frame is the one after the last, whenever it is
    /// asked for, and its pace counts from then; the frames whose time passed while the
    /// caller paused are not skipped. For a caller that paused on purpose (the camera loop
    /// warming its reader up on the first frame); other sources have no pace to restart.
    pub fn resync(&mut self) {
        if let Source::Capture {
            pace: Some((_, due)),
            ..
        } = self
        {
            *due = None;
        }
    }

    /// The next frame (BGR); `None` when a file has ended.
    pub fn next_frame(&mut self) -> Result<Option<Mat>, AnprError> {
        match self {
            Source::Capture {
                url,
                cap,
                file,
                pace,
            } => {
                if let Some((interval, last)) = pace {
                    let now = Instant::now();
                    let due = last.insert(last.map_or(now, |d| d + *interval));
                    if *due > now {
                        std::thread::sleep(*due - now);
                    } else {
                        // Behind (recognition slower than the frame rate): the frames whose
                        // time has passed are skipped, as a live camera's would be gone, so
                        // what is read is what the camera shows now.
                        let behind = ((now - *due).as_secs_f64() / interval.as_secs_f64()) as u64;
                        for _ in 0..behind {
                            if !cap.grab().map_err(|e| err(url, e))? {
                                break;
                            }
                        }
                        *due += interval.mul_f64(behind as f64);
                    }
                }
                let mut frame = Mat::default();
                let got = cap.read(&mut frame).map_err(|e| err(url, e))?;
                if !got || frame.empty() {
                    return if *file {
                        Ok(None)
                    } else {
                        Err(err(url, "stream ended"))
                    };
                }
                Ok(Some(frame))
            }
            Source::Snapshot {
                url,
                host,
                port,
                path,
                timeout,
            } => {
                let body = http_get(host, *port, path, *timeout).map_err(|e| err(url, e))?;
                // Dimensions checked before decoding: a small file can declare a huge image.
                let frame = super::image::decode(&body).map_err(|e| {
                    err(
                        url,
                        match e {
                            AnprError::Image(m) => format!("the snapshot: {m}"),
                            AnprError::Opencv(e) => format!("the snapshot: {e}"),
                            e => e.to_string(),
                        },
                    )
                })?;
                Ok(Some(frame))
            }
        }
    }
}

/// A plain HTTP/1.1 GET: status 200 and a body of at most [`MAX_SNAPSHOT`] bytes, sized by
/// Content-Length, chunked, or the connection's close.
pub fn http_get(host: &str, port: u16, path: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("host has no address")?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    // One write: a camera may answer and close as soon as it has the request line.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: image/jpeg\r\n\r\n"
    );
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.take(MAX_SNAPSHOT as u64 + 64 * 1024)
        .read_to_end(&mut raw)
        .map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = &raw[split + 4..];
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(format!("HTTP status {status:?}"));
    }
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return dechunk(body);
    }
    match header("content-length") {
        Some(n) => {
            let n: usize = n.parse().map_err(|_| "bad Content-Length")?;
            if n > MAX_SNAPSHOT {
                return Err(format!("snapshot of {n} bytes is over the limit"));
            }
            if body.len() < n {
                return Err(format!("snapshot cut short: {} of {n} bytes", body.len()));
            }
            Ok(body[..n].to_vec())
        }
        None if body.len() > MAX_SNAPSHOT => Err("snapshot over the limit".into()),
        None => Ok(body.to_vec()),
    }
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
        let size_txt = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_txt.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 || out.len() + size > MAX_SNAPSHOT {
            return Err("chunk cut short or over the limit".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"5\r\nab").is_err());
    }

    /// A camera's snapshot endpoint on a real socket: answers each connection with `reply`.
    fn serve(replies: Vec<Vec<u8>>) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for reply in replies {
                let (mut c, _) = l.accept().unwrap();
                // The whole request, then the reply, as a camera's web server does.
                let mut req = Vec::new();
                let mut buf = [0u8; 256];
                while !req.ends_with(b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                c.write_all(&reply).unwrap();
            }
        });
        port
    }

    #[test]
    fn http_snapshots_are_fetched_and_decoded() {
        let jpeg = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/plates/kz_0001.jpg"
        ))
        .unwrap();
        let mut ok = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        )
        .into_bytes();
        ok.extend_from_slice(&jpeg);
        let port = serve(vec![
            ok,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
        ]);
        let mut s = Source::open(&format!("http://127.0.0.1:{port}/snap.jpg"), true).unwrap();
        let f = s.next_frame().unwrap().unwrap();
        assert_eq!((f.cols(), f.rows()), (1280, 720));
        let e = s.next_frame().unwrap_err().to_string();
        assert!(e.contains("404"), "{e}");
        let e = s.next_frame().unwrap_err().to_string();
        assert!(e.contains("decode"), "{e}");
    }

    /// The test video: 6 s at 10 frames/s, 640x360.
    const VIDEO: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/truck-123ABC02.avi"
    );

    #[test]
    fn a_video_file_plays_to_its_end() {
        let mut s = Source::open(VIDEO, false).unwrap();
        let mut n = 0;
        while let Some(f) = s.next_frame().unwrap() {
            assert_eq!((f.cols(), f.rows()), (640, 360));
            n += 1;
        }
        assert_eq!(n, 60);
    }

    #[test]
    fn a_file_played_at_its_pace_skips_what_went_by_unless_resynced() {
        let path = VIDEO;
        // Every frame differs from every other (the video has sensor noise), so a frame
        // names its place in the file.
        let mut all = Source::open(path, false).unwrap();
        let mut frames = Vec::new();
        while let Some(f) = all.next_frame().unwrap() {
            frames.push(f);
        }
        let place = |f: &Mat| {
            frames.iter().position(|g| {
                let mut d = Mat::default();
                opencv::core::absdiff(f, g, &mut d).unwrap();
                opencv::core::count_non_zero(&d.reshape(1, 0).unwrap()).unwrap() == 0
            })
        };
        let pause = Duration::from_millis(350); // three and a half frames at 10 frames/s
        let mut paced = Source::open(path, true).unwrap();
        assert_eq!(place(&paced.next_frame().unwrap().unwrap()), Some(0));
        std::thread::sleep(pause);
        // Frame 1 was due 100 ms after frame 0: 250 ms late, the two frames whose time
        // also went by are gone, as a live camera's would be. A slower machine only pauses
        // longer.
        let after = place(&paced.next_frame().unwrap().unwrap()).unwrap();
        assert!(after >= 3, "{after}");
        // Resynced after the pause: the next frame is the one after the last.
        let mut paced = Source::open(path, true).unwrap();
        assert_eq!(place(&paced.next_frame().unwrap().unwrap()), Some(0));
        std::thread::sleep(pause);
        paced.resync();
        assert_eq!(place(&paced.next_frame().unwrap().unwrap()), Some(1));
    }

    #[test]
    fn missing_files_and_https_are_clear_errors() {
        let e = Source::open("/nonexistent/video.avi", true).err().unwrap();
        assert!(e.to_string().contains("no such file"), "{e}");
        let e = Source::open("https://cam/snap.jpg", true).err().unwrap();
        assert!(e.to_string().contains("HTTPS"), "{e}");
    }
}
