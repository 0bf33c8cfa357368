//! The data: class distributions, sample images, and the files that were skipped.

use contracts::{outputs, slots, ImagesReader, ManifestMeta, Skipped};
use pipeline::{BoxError, StageContext};
use serde_json::json;

use crate::html::{gallery, Section};
use crate::params::Params;
use crate::results::{encode_jpeg, encode_png, half, Builder};
use crate::svg;

/// Class distributions per split and sample images.
pub(crate) fn data_section(
    ctx: &StageContext<'_>,
    b: &mut Builder,
    m: &ManifestMeta,
    p: &Params,
) -> Result<Section, BoxError> {
    let mut sec = Section::new("data", "Data");
    let splits: Vec<(&str, Vec<usize>)> = contracts::SPLITS
        .iter()
        .map(|s| (*s, m.class_counts.get(*s).cloned().unwrap_or_default()))
        .collect();
    let fig = b.svg(
        "class_distribution",
        svg::class_distribution(&m.classes, &splits),
    );
    sec.figure(&fig, "Images per class in each split.");
    b.metrics["dataset"]["class_counts"] = json!(m.class_counts);
    // Samples: the first images of the evaluation split, spread over it.
    let eval: ImagesReader<'_> = slots::images(outputs::EVALUATION).read(ctx)?;
    let c0 = eval.chunk(0)?;
    let (imgs, labels, size) = (c0.images(), c0.labels()?, c0.height);
    let per = size * size * 3;
    let n = labels.len();
    let side = (p.samples as f64).sqrt() as usize;
    let mut grid = vec![255u8; side * side * per];
    let mut tiles = Vec::new();
    for k in 0..p.samples.min(n) {
        let i = k * n / p.samples;
        let img = &imgs[i * per..(i + 1) * per];
        let (gx, gy) = (k % side, k / side);
        for y in 0..size {
            let dst = ((gy * size + y) * side * size + gx * size) * 3;
            grid[dst..dst + size * 3].copy_from_slice(&img[y * size * 3..(y + 1) * size * 3]);
        }
        let (px, h) = half(img, size);
        tiles.push((
            encode_jpeg(&px, h, h)?,
            "image/jpeg",
            vec![m
                .classes
                .get(labels[i] as usize)
                .cloned()
                .unwrap_or_default()],
        ));
    }
    b.files.insert(
        "samples.png".into(),
        encode_png(&grid, side * size, side * size)?,
    );
    sec.raw("<figure class=\"fig\">");
    sec.raw(&gallery(&tiles, 112));
    sec.raw(&format!(
        "<figcaption>Figure: {} evaluation images as the models see them ({size}x{size} after preprocessing), with their class.</figcaption></figure>\n",
        tiles.len()
    ));
    Ok(sec)
}

/// Files skipped by the loader and by preprocess, and images shared between splits.
pub(crate) fn skipped_section(
    ctx: &StageContext<'_>,
    b: &mut Builder,
    m: &ManifestMeta,
) -> Result<Section, BoxError> {
    let mut skipped: Vec<Skipped> = m.skipped.clone();
    for split in contracts::SPLITS {
        let images: ImagesReader<'_> = slots::images(split).read(ctx)?;
        skipped.extend(images.skipped()?);
    }
    let mut sec = Section::new("skipped", &format!("Skipped files ({})", skipped.len()));
    if skipped.is_empty() {
        sec.text("No input file was skipped.");
    } else {
        let rows: Vec<Vec<String>> = skipped
            .iter()
            .map(|s| vec![s.path.clone(), s.reason.clone()])
            .collect();
        sec.table(&["file", "reason"], &rows, &[]);
    }
    if !m.leakage.is_empty() {
        let rows: Vec<Vec<String>> = m.leakage.iter().map(|g| vec![g.join(" = ")]).collect();
        sec.text(
            "Identical images found in more than one split (kept, but they inflate test accuracy):",
        );
        sec.table(&["identical files"], &rows, &[]);
    }
    b.metrics["skipped"] = json!(skipped);
    b.metrics["leakage"] = json!(m.leakage);
    b.md.push_str(&format!(
        "\n{} input files skipped. Report: index.html in the report folder.\n",
        skipped.len()
    ));
    Ok(sec)
}
