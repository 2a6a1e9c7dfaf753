//! Images from outside (a camera's HTTP snapshot, a file given to `acsgd anpr`) decoded only
//! when they are of a size a plate reader needs: a few megabytes of PNG or JPEG can declare
//! 30 000 x 30 000 pixels and decode to gigabytes. The header's dimensions are read first
//! (PNG's IHDR, JPEG's start-of-frame) and an image over [`MAX_PIXELS`] is refused before
//! opencv allocates anything. Other formats opencv reads are left to opencv's own limit.

use opencv::core::{Mat, Vector};
use opencv::prelude::*;

use super::AnprError;

/// The most pixels decoded: 40 megapixels, above any camera a lane has (8K is 33).
pub const MAX_PIXELS: u64 = 40_000_000;
/// The largest image file read (a snapshot has its own, smaller limit).
pub const MAX_FILE: u64 = 64 << 20;

/// Width and height as the header declares them, for PNG and JPEG; `None` for anything else
/// or a header cut short.
pub fn dimensions(b: &[u8]) -> Option<(u32, u32)> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() >= 24 && &b[12..16] == b"IHDR" {
        let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        return Some((be(16), be(20)));
    }
    if !b.starts_with(&[0xff, 0xd8]) {
        return None;
    }
    // JPEG: walk the marker segments to the first start-of-frame (SOF0–SOF15 but DHT, JPG
    // and DAC), whose payload holds precision, height, width.
    let mut i = 2;
    while i + 4 <= b.len() {
        if b[i] != 0xff {
            return None;
        }
        let marker = b[i + 1];
        if marker == 0xff {
            // Fill byte.
            i += 1;
            continue;
        }
        if matches!(marker, 0xd0..=0xd7 | 0x01) {
            i += 2;
            continue;
        }
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if (0xc0..=0xcf).contains(&marker) && !matches!(marker, 0xc4 | 0xc8 | 0xcc) {
            if i + 9 > b.len() {
                return None;
            }
            let h = u16::from_be_bytes([b[i + 5], b[i + 6]]) as u32;
            let w = u16::from_be_bytes([b[i + 7], b[i + 8]]) as u32;
            return Some((w, h));
        }
        if marker == 0xda || len < 2 {
            return None;
        }
        i += 2 + len;
    }
    None
}

/// Decodes an image (BGR) whose header declares at most [`MAX_PIXELS`].
pub fn decode(bytes: &[u8]) -> Result<Mat, AnprError> {
    if let Some((w, h)) = dimensions(bytes) {
        if u64::from(w) * u64::from(h) > MAX_PIXELS {
            return Err(AnprError::Image(format!(
                "{w}x{h} pixels is more than the {} megapixels decoded",
                MAX_PIXELS / 1_000_000
            )));
        }
    }
    let buf = Vector::<u8>::from_slice(bytes);
    let frame = opencv::imgcodecs::imdecode(&buf, opencv::imgcodecs::IMREAD_COLOR)
        .map_err(AnprError::Opencv)?;
    if frame.empty() {
        return Err(AnprError::Image("not an image opencv can decode".into()));
    }
    Ok(frame)
}

/// Reads and decodes an image file: a regular file of at most [`MAX_FILE`] bytes.
pub fn read_file(path: &std::path::Path) -> Result<Mat, AnprError> {
    let meta = std::fs::metadata(path).map_err(|_| AnprError::Image("no such file".into()))?;
    if !meta.is_file() {
        return Err(AnprError::Image("not a regular file".into()));
    }
    if meta.len() > MAX_FILE {
        return Err(AnprError::Image(format!(
            "{} bytes is more than the {} MiB read",
            meta.len(),
            MAX_FILE >> 20
        )));
    }
    let bytes = std::fs::read(path).map_err(AnprError::Io)?;
    decode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG that declares `w` x `h` and holds one compressed row of nothing: what a
    /// decompression bomb's header looks like.
    pub(crate) fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(w.to_be_bytes());
        ihdr.extend(h.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        out.extend(13u32.to_be_bytes());
        out.extend(&ihdr);
        out.extend(crc32fast::hash(&ihdr).to_be_bytes());
        out
    }

    #[test]
    fn png_and_jpeg_headers_give_their_size() {
        assert_eq!(
            dimensions(&png_header(30_000, 20_000)),
            Some((30_000, 20_000))
        );
        let img = Mat::new_rows_cols_with_default(
            48,
            64,
            opencv::core::CV_8UC3,
            opencv::core::Scalar::all(90.0),
        )
        .unwrap();
        let jpeg = super::super::pipeline::jpeg(&img, 90).unwrap();
        assert_eq!(dimensions(&jpeg), Some((64, 48)));
        assert_eq!(dimensions(b"GIF89a"), None);
        assert_eq!(dimensions(&jpeg[..8]), None);
        assert_eq!(decode(&jpeg).unwrap().cols(), 64);
    }

    #[test]
    fn a_bomb_is_refused_before_it_is_decoded() {
        let e = decode(&png_header(30_000, 30_000)).unwrap_err().to_string();
        assert_eq!(
            e,
            "image: 30000x30000 pixels is more than the 40 megapixels decoded"
        );
        // A small image's header passes the check (and then fails as the broken PNG it is).
        let e = decode(&png_header(640, 360)).unwrap_err().to_string();
        assert_eq!(e, "image: not an image opencv can decode");
    }
}
