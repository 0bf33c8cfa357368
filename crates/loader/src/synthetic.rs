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
