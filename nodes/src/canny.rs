//! Canny edge detection as ComfyUI's `Canny` node runs it: kornia's
//! `kornia.filters.canny` (0.9) with its defaults, on one grey plane.
//!
//! The steps and their conventions, each as kornia has them:
//! - grey = 0.299 R + 0.587 G + 0.114 B;
//! - a 5×5 Gaussian blur with σ = 1, rows then columns, mirrored borders
//!   (torch's `reflect`);
//! - the unnormalised Sobel gradient, replicated borders;
//! - magnitude √(gx² + gy² + 1e-6), the border outside the image counting as
//!   a flat pixel (√1e-6);
//! - non-maximum suppression along the gradient direction rounded to 45°
//!   (half to even): strictly greater than both neighbours, except that a tie
//!   with the right or lower neighbour keeps the pixel (as OpenCV);
//! - strict thresholds (weak above `low`, strong above `high`) and hysteresis:
//!   a weak pixel 8-connected to a strong one through weak pixels is an edge.

/// kornia's `eps` inside the square root of the magnitude.
const EPS: f32 = 1e-6;

/// The smallest side torch's `reflect` padding of the 5-tap blur accepts.
pub const MIN_SIDE: usize = 3;

/// `(dy, dx)` of the neighbour in direction k (0 = right, counted towards
/// down in steps of 45°), as kornia's `_WINDOW_OFFSETS`.
const DIRECTIONS: [(isize, isize); 8] = [
    (0, 1),
    (1, 1),
    (1, 0),
    (1, -1),
    (0, -1),
    (-1, -1),
    (-1, 0),
    (-1, 1),
];

/// One grey plane, row-major.
pub struct Plane {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

impl Plane {
    /// kornia's `rgb_to_grayscale` of interleaved RGB pixels.
    pub fn grey_from_rgb(width: usize, height: usize, rgb: &[f32]) -> Self {
        let values = rgb
            .chunks_exact(3)
            .map(|p| {
                let grey = p[0] * 0.299;
                let grey = p[1].mul_add(0.587, grey);
                p[2].mul_add(0.114, grey)
            })
            .collect();
        Plane {
            width,
            height,
            values,
        }
    }

    fn at(&self, y: usize, x: usize) -> f32 {
        self.values[y * self.width + x]
    }
}

/// The edge map (1 on edges, 0 elsewhere) of a plane at least
/// [`MIN_SIDE`] pixels a side, with `0 < low <= high`.
pub fn edges(plane: &Plane, low: f32, high: f32) -> Vec<bool> {
    let blurred = blur(plane);
    let (gx, gy) = sobel(&blurred);
    let magnitude = suppressed_magnitude(&gx, &gy, plane.width, plane.height);
    hysteresis(&magnitude, plane.width, plane.height, low, high)
}

fn gaussian_taps() -> [f32; 5] {
    let raw = [-2.0f32, -1.0, 0.0, 1.0, 2.0].map(|x| (-(x * x) / 2.0).exp());
    let sum: f32 = raw.iter().sum();
    raw.map(|w| w / sum)
}

/// torch's `reflect`: the border pixel is the mirror, not repeated.
fn reflect(i: isize, len: usize) -> usize {
    let last = len as isize - 1;
    let i = if i < 0 { -i } else { i };
    (if i > last { 2 * last - i } else { i }) as usize
}

fn blur(plane: &Plane) -> Plane {
    let taps = gaussian_taps();
    let (w, h) = (plane.width, plane.height);
    let mut rows = vec![0.0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            rows[y * w + x] = taps.iter().enumerate().fold(0.0, |sum, (k, t)| {
                sum + t * plane.at(y, reflect(x as isize + k as isize - 2, w))
            });
        }
    }
    let mut values = vec![0.0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            values[y * w + x] = taps.iter().enumerate().fold(0.0, |sum, (k, t)| {
                sum + t * rows[reflect(y as isize + k as isize - 2, h) * w + x]
            });
        }
    }
    Plane {
        width: w,
        height: h,
        values,
    }
}

/// The unnormalised Sobel gradient with replicated borders.
fn sobel(plane: &Plane) -> (Vec<f32>, Vec<f32>) {
    let (w, h) = (plane.width, plane.height);
    let clamp = |i: isize, len: usize| i.clamp(0, len as isize - 1) as usize;
    let mut gx = vec![0.0f32; w * h];
    let mut gy = vec![0.0f32; w * h];
    for y in 0..h {
        let (up, down) = (clamp(y as isize - 1, h), clamp(y as isize + 1, h));
        for x in 0..w {
            let (left, right) = (clamp(x as isize - 1, w), clamp(x as isize + 1, w));
            let p = |yy: usize, xx: usize| plane.at(yy, xx);
            gx[y * w + x] = (p(up, right) - p(up, left))
                + 2.0 * (p(y, right) - p(y, left))
                + (p(down, right) - p(down, left));
            gy[y * w + x] = (p(down, left) - p(up, left))
                + 2.0 * (p(down, x) - p(up, x))
                + (p(down, right) - p(up, right));
        }
    }
    (gx, gy)
}

/// The magnitude where a pixel is a local maximum along its gradient, else 0.
fn suppressed_magnitude(gx: &[f32], gy: &[f32], w: usize, h: usize) -> Vec<f32> {
    let flat = EPS.sqrt();
    let magnitude: Vec<f32> = gx
        .iter()
        .zip(gy)
        .map(|(x, y)| (x * x + y * y + EPS).sqrt())
        .collect();
    let neighbour = |y: usize, x: usize, k: usize| {
        let (dy, dx) = DIRECTIONS[k];
        let (ny, nx) = (y as isize + dy, x as isize + dx);
        if ny < 0 || nx < 0 || ny >= h as isize || nx >= w as isize {
            flat
        } else {
            magnitude[ny as usize * w + nx as usize]
        }
    };
    let mut out = vec![0.0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let m = magnitude[i];
            let angle = gy[i].atan2(gx[i]);
            let angle = if angle.is_nan() { 0.0 } else { angle };
            let octant = (angle * (4.0 / std::f32::consts::PI)).round_ties_even();
            let positive = octant.rem_euclid(8.0) as usize;
            let negative = (octant + 4.0).rem_euclid(8.0) as usize;
            let beats = |k: usize| {
                let n = neighbour(y, x, k);
                m > n || ((k == 0 || k == 2) && m == n)
            };
            if beats(positive) && beats(negative) && m > flat {
                out[i] = m;
            }
        }
    }
    out
}

/// Strong pixels, and weak ones reached from a strong one through weak ones.
fn hysteresis(magnitude: &[f32], w: usize, h: usize, low: f32, high: f32) -> Vec<bool> {
    let weak: Vec<bool> = magnitude.iter().map(|&m| m > low).collect();
    let mut edge: Vec<bool> = magnitude.iter().map(|&m| m > high).collect();
    let mut frontier: Vec<usize> = (0..w * h).filter(|&i| edge[i]).collect();
    while let Some(i) = frontier.pop() {
        let (y, x) = ((i / w) as isize, (i % w) as isize);
        for (dy, dx) in DIRECTIONS {
            let (ny, nx) = (y + dy, x + dx);
            if ny < 0 || nx < 0 || ny >= h as isize || nx >= w as isize {
                continue;
            }
            let j = ny as usize * w + nx as usize;
            if weak[j] && !edge[j] {
                edge[j] = true;
                frontier.push(j);
            }
        }
    }
    edge
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(width: usize, height: usize, f: impl Fn(usize, usize) -> f32) -> Plane {
        let values = (0..height)
            .flat_map(|y| (0..width).map(move |x| (y, x)))
            .map(|(y, x)| f(y, x))
            .collect();
        Plane {
            width,
            height,
            values,
        }
    }

    #[test]
    fn a_flat_image_has_no_edges() {
        let flat = plane(9, 7, |_, _| 0.5);
        assert!(edges(&flat, 0.1, 0.2).iter().all(|e| !e));
    }

    #[test]
    fn a_vertical_step_gives_one_vertical_line_on_its_left_side() {
        let step = plane(12, 8, |_, x| if x < 6 { 0.0 } else { 1.0 });
        let map = edges(&step, 0.4, 0.8);
        for y in 0..8 {
            let row: Vec<usize> = (0..12).filter(|&x| map[y * 12 + x]).collect();
            // The two pixels across the step tie; the left one is kept.
            assert_eq!(row, vec![5], "row {y}");
        }
    }

    #[test]
    fn weak_pixels_are_kept_only_when_connected_to_a_strong_one() {
        // A column of magnitudes: strong at the top, weak below, then a weak
        // island after a gap.
        let (w, h) = (1, 7);
        let magnitude = [3.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0];
        let kept = hysteresis(&magnitude, w, h, 0.5, 2.0);
        assert_eq!(kept, [true, true, true, false, false, false, false]);
    }

    #[test]
    fn reflect_mirrors_without_repeating_the_border() {
        assert_eq!(
            (-2..7).map(|i| reflect(i, 5)).collect::<Vec<_>>(),
            [2, 1, 0, 1, 2, 3, 4, 3, 2]
        );
    }
}
