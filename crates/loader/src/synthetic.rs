//! The embedded demo dataset: 11 visually distinct classes of synthetic pictures (colour,
//! shape and texture, with random placement and noise), generated deterministically from a
//! seed. It exists so that the whole study runs on a fresh clone; it is labelled synthetic in
//! every output and says nothing about food.

use std::io::Cursor;

use image::ImageEncoder;

/// Class names of the synthetic set.
pub const CLASSES: [&str; 11] = [
    "red discs",
    "green squares",
    "blue stripes",
    "yellow checks",
    "purple rings",
    "orange triangles",
    "cyan dots",
    "grey noise",
    "pink crosses",
    "brown gradient",
    "white diagonals",
];

/// The workspace's seeded generator, with the draws the pictures need.
struct Rng(pipeline::SplitMix64);

impl Rng {
    fn f(&mut self) -> f32 {
        (self.0.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn range(&mut self, a: f32, b: f32) -> f32 {
        a + (b - a) * self.f()
    }
}

const COLOURS: [[f32; 3]; 11] = [
    [220.0, 40.0, 40.0],
    [40.0, 180.0, 60.0],
    [40.0, 70.0, 220.0],
    [230.0, 210.0, 40.0],
    [150.0, 50.0, 190.0],
    [240.0, 140.0, 30.0],
    [40.0, 210.0, 220.0],
    [128.0, 128.0, 128.0],
    [240.0, 120.0, 180.0],
    [140.0, 90.0, 40.0],
    [235.0, 235.0, 235.0],
];

/// RGB pixels (row-major, 3 bytes a pixel) of image `index` of class `class`.
pub fn render(class: usize, index: u64, width: u32, height: u32, seed: u64) -> Vec<u8> {
    let mut rng = Rng(pipeline::SplitMix64::new(
        seed ^ (class as u64).wrapping_mul(0x1000_0000_01B3) ^ index.wrapping_mul(0x9E37_79B9),
    ));
    let (w, h) = (width as f32, height as f32);
    let fg = COLOURS[class % COLOURS.len()].map(|c| (c + rng.range(-25.0, 25.0)).clamp(0.0, 255.0));
    let bg = [
        rng.range(10.0, 90.0),
        rng.range(10.0, 90.0),
        rng.range(10.0, 90.0),
    ];
    let (cx, cy) = (rng.range(0.3, 0.7) * w, rng.range(0.3, 0.7) * h);
    let r = rng.range(0.2, 0.35) * w.min(h);
    let period = rng.range(6.0, 14.0);
    let phase = rng.range(0.0, period);
    let noise = 18.0;
    let mut out = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let (xf, yf) = (x as f32, y as f32);
            let (dx, dy) = (xf - cx, yf - cy);
            let d = (dx * dx + dy * dy).sqrt();
            let on = match class % 11 {
                0 => d < r,
                1 => dx.abs() < r && dy.abs() < r,
                2 => ((xf + phase) / period) as i32 % 2 == 0,
                3 => (((xf + phase) / period) as i32 + ((yf + phase) / period) as i32) % 2 == 0,
                4 => ((d / (period * 0.7)) as i32) % 2 == 0 && d < 2.0 * r,
                5 => dy > -r && dy < r && dx.abs() < (dy + r) * 0.5,
                6 => {
                    let (mx, my) = (
                        (xf + phase) % period - period / 2.0,
                        (yf + phase) % period - period / 2.0,
                    );
                    mx * mx + my * my < (period / 4.0).powi(2)
                }
                7 => rng.f() < 0.5,
                8 => (dx.abs() < r * 0.25 && dy.abs() < r) || (dy.abs() < r * 0.25 && dx.abs() < r),
                9 => rng.f() < xf / w,
                _ => (((xf + yf + phase) / period) as i32) % 2 == 0,
            };
            let base = if on { fg } else { bg };
            for c in base {
                out.push((c + rng.range(-noise, noise)).clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

/// The PNG file of one synthetic image.
pub fn png(class: usize, index: u64, width: u32, height: u32, seed: u64) -> Vec<u8> {
    let px = render(class, index, width, height, seed);
    let mut buf = Cursor::new(Vec::new());
    image::codecs::png::PngEncoder::new(&mut buf)
        .write_image(&px, width, height, image::ExtendedColorType::Rgb8)
        .expect("encoding a well-formed RGB buffer into memory cannot fail");
    buf.into_inner()
}

/// Class names of the default synthetic set ("scenes").
pub const SCENE_CLASSES: [&str; 11] = [
    "stripes", "checks", "dots", "rings", "grid", "zigzag", "triangle", "star", "disc", "frame",
    "crescent",
];

/// HSV (h in turns, s and v in 0..1) to RGB 0..255.
fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = (h.rem_euclid(1.0)) * 6.0;
    let (i, f) = (h6.floor() as i32, h6 - h6.floor());
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let (r, g, b) = match i {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    [r * 255.0, g * 255.0, b * 255.0]
}

/// Whether object-local point (u, v) in [-1, 1]² belongs to class `class`'s object: a texture
/// inside a disc, or a shape.
fn inside(class: usize, u: f32, v: f32, freq: f32) -> bool {
    let r = (u * u + v * v).sqrt();
    let fract = |x: f32| x - x.floor();
    let disc = r < 1.0;
    match class {
        0 => disc && (u * freq).sin() > 0.0,
        1 => disc && ((u * freq / 3.0).floor() + (v * freq / 3.0).floor()) as i32 % 2 == 0,
        2 => {
            let (a, b) = (fract(u * freq / 4.0) - 0.5, fract(v * freq / 4.0) - 0.5);
            disc && a * a + b * b < 0.09
        }
        3 => disc && (r * freq * 1.5).sin() > 0.0,
        4 => {
            let (a, b) = (fract(u * freq / 4.0) - 0.5, fract(v * freq / 4.0) - 0.5);
            disc && (a.abs() > 0.36 || b.abs() > 0.36)
        }
        5 => {
            let tri = (fract(v * freq / 4.0) - 0.5).abs() * 2.0;
            disc && ((u + 0.35 * tri) * freq).sin() > 0.0
        }
        6 => v > -0.8 && v < 0.9 && u.abs() < (v + 0.8) * 0.55,
        7 => {
            let a = v.atan2(u) + std::f32::consts::FRAC_PI_2;
            let k = (a * 5.0 / std::f32::consts::TAU).rem_euclid(1.0);
            let spike = 1.0 - (k - 0.5).abs() * 2.0;
            r < 0.42 + 0.58 * spike.powf(1.6)
        }
        8 => r < 0.85,
        9 => u.abs().max(v.abs()) < 0.9 && u.abs().max(v.abs()) > 0.55,
        _ => r < 0.9 && ((u - 0.45) * (u - 0.45) + v * v).sqrt() > 0.7,
    }
}

/// RGB pixels of picture `index` of class `class` for the default synthetic set: one object
/// (a textured disc or a shape) at a random position, scale and rotation, in a random colour
/// (colour says nothing about the class), on a cluttered, unevenly lit background, partly
/// occluded, with sensor noise.
pub fn render_scene(class: usize, index: u64, width: u32, height: u32, seed: u64) -> Vec<u8> {
    let mut rng = Rng(pipeline::SplitMix64::new(
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
            ^ (class as u64).wrapping_mul(0x1000_0000_01B3)
            ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    ));
    let (w, h) = (width as f32, height as f32);
    let side = w.min(h);
    let hue = rng.f();
    let fg = hsv(hue, rng.range(0.45, 0.95), rng.range(0.55, 1.0));
    let bg_a = hsv(
        hue + rng.range(0.25, 0.75),
        rng.range(0.1, 0.6),
        rng.range(0.2, 0.6),
    );
    let bg_b = hsv(rng.f(), rng.range(0.1, 0.6), rng.range(0.3, 0.8));
    let (cx, cy) = (rng.range(0.3, 0.7) * w, rng.range(0.3, 0.7) * h);
    let scale = rng.range(0.18, 0.36) * side;
    let angle = rng.range(0.0, std::f32::consts::TAU);
    let (ca, sa) = (angle.cos(), angle.sin());
    let freq = rng.range(9.0, 15.0);
    // Background: two colours mixed by low-frequency waves; clutter: thin random strokes.
    let waves: Vec<[f32; 3]> = (0..3)
        .map(|_| {
            [
                rng.range(0.02, 0.08),
                rng.range(0.02, 0.08),
                rng.range(0.0, 6.3),
            ]
        })
        .collect();
    let strokes: Vec<[f32; 6]> = (0..rng.range(3.0, 8.0) as usize)
        .map(|_| {
            [
                rng.f() * w,
                rng.f() * h,
                rng.range(0.0, std::f32::consts::PI),
                rng.range(0.1, 0.5) * side,
                rng.range(1.0, 3.0),
                rng.f(),
            ]
        })
        .collect();
    // Lighting: a gradient in a random direction.
    let (la, lstrength) = (rng.range(0.0, std::f32::consts::TAU), rng.range(0.2, 0.6));
    // Occluders: up to two rectangles.
    let occluders: Vec<[f32; 5]> = (0..(rng.f() * 2.6) as usize)
        .map(|_| {
            [
                rng.f() * w,
                rng.f() * h,
                rng.range(0.1, 0.3) * side,
                rng.range(0.1, 0.3) * side,
                rng.range(0.2, 0.8),
            ]
        })
        .collect();
    let noise = 14.0;
    let mut out = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let (xf, yf) = (x as f32, y as f32);
            let mix = waves
                .iter()
                .map(|w| (xf * w[0] + yf * w[1] + w[2]).sin())
                .sum::<f32>()
                / 6.0
                + 0.5;
            let mut px: [f32; 3] = std::array::from_fn(|c| bg_a[c] * (1.0 - mix) + bg_b[c] * mix);
            for s in &strokes {
                let (dx, dy) = (xf - s[0], yf - s[1]);
                let along = dx * s[2].cos() + dy * s[2].sin();
                let across = -dx * s[2].sin() + dy * s[2].cos();
                if along.abs() < s[3] && across.abs() < s[4] {
                    px = hsv(s[5], 0.4, 0.7);
                }
            }
            let (dx, dy) = ((xf - cx) / scale, (yf - cy) / scale);
            let (u, v) = (dx * ca + dy * sa, -dx * sa + dy * ca);
            if inside(class, u, v, freq) {
                px = fg;
            }
            for o in &occluders {
                if (xf - o[0]).abs() < o[2] && (yf - o[1]).abs() < o[3] {
                    px = [o[4] * 255.0; 3];
                }
            }
            let light = 1.0 + lstrength * ((xf / w - 0.5) * la.cos() + (yf / h - 0.5) * la.sin());
            for c in px {
                out.push((c * light + rng.range(-noise, noise)).clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

/// The PNG file of one picture of the default synthetic set.
pub fn scene_png(class: usize, index: u64, width: u32, height: u32, seed: u64) -> Vec<u8> {
    let px = render_scene(class, index, width, height, seed);
    let mut buf = Cursor::new(Vec::new());
    image::codecs::png::PngEncoder::new(&mut buf)
        .write_image(&px, width, height, image::ExtendedColorType::Rgb8)
        .expect("encoding a well-formed RGB buffer into memory cannot fail");
    buf.into_inner()
}
