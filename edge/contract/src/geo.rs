//! Corridor geometry both sides judge by: the appliance's seal rules at the post and central's
//! positions between posts compare a tracker's fix with a declared corridor the same way.

/// Mean Earth radius, metres.
const EARTH_M: f64 = 6_371_008.8;

/// Great-circle distance in metres.
pub fn distance_m(a: [f64; 2], b: [f64; 2]) -> f64 {
    let (la1, la2) = (a[0].to_radians(), b[0].to_radians());
    let dla = la2 - la1;
    let dlo = (b[1] - a[1]).to_radians();
    let h = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
    2.0 * EARTH_M * h.sqrt().min(1.0).asin()
}

/// Distance in metres from `p` to the polyline (to the point itself for a one-point line), on a local equirectangular projection around
/// `p` (exact enough for corridors a few kilometres wide).
pub fn distance_to_line_m(p: [f64; 2], line: &[[f64; 2]]) -> f64 {
    let k = p[0].to_radians().cos();
    let xy = |q: [f64; 2]| {
        (
            (q[1] - p[1]).to_radians() * EARTH_M * k,
            (q[0] - p[0]).to_radians() * EARTH_M,
        )
    };
    if let [only] = line {
        return distance_m(p, *only);
    }
    let mut best = f64::INFINITY;
    for w in line.windows(2) {
        let (a, b) = (xy(w[0]), xy(w[1]));
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = dx * dx + dy * dy;
        let t = if len2 == 0.0 {
            0.0
        } else {
            (-(a.0 * dx + a.1 * dy) / len2).clamp(0.0, 1.0)
        };
        let (cx, cy) = (a.0 + t * dx, a.1 + t * dy);
        best = best.min((cx * cx + cy * cy).sqrt());
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        // Khorgos to Almaty: 108.3 km north-south and 283.0 km east-west (3.52° of longitude
        // at cos 43.7°), 303.0 km on a flat map.
        let d = distance_m([44.2125, 80.4089], [43.2389, 76.8897]);
        assert!((d - 303_000.0).abs() < 1_500.0, "{d}");
        let line = [[44.0, 80.0], [44.0, 81.0]];
        let off = distance_to_line_m([44.01, 80.5], &line);
        assert!((off - 1112.0).abs() < 5.0, "{off}");
        let beyond = distance_to_line_m([44.0, 81.01], &line);
        assert!((beyond - 800.0).abs() < 5.0, "{beyond}");
    }
}
