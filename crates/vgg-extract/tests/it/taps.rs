//! Taps (per-image summaries of intermediate layers) and views (mirror, crops, rescalings).

use fixtures::{f32s, SafeTensors};
use vgg_extract::{
    extract, flip_rgb, ConvStack, ConvWeights, InputConvention, Network, Params, View,
};

use crate::{fixture, NARROW};
use vgg_extract::LayerSpec::Conv;

fn narrow_weights() -> Vec<ConvWeights> {
    let bytes = std::fs::read(fixture("narrow_weights.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    ConvStack::tensor_specs(3, NARROW)
        .chunks(2)
        .map(|p| ConvWeights {
            weight: f32s(&st, &p[0].name).1,
            bias: f32s(&st, &p[1].name).1,
        })
        .collect()
}

/// Plain per-image, per-channel mean (f64) and maximum of channels-last maps.
fn plain_summary(maps: &[f32], n: usize, c: usize) -> (Vec<f64>, Vec<f32>) {
    let spatial = maps.len() / (n * c);
    let (mut avg, mut max) = (Vec::new(), Vec::new());
    for img in 0..n {
        for ch in 0..c {
            let vals = (0..spatial).map(|p| maps[(img * spatial + p) * c + ch]);
            avg.push(vals.clone().map(f64::from).sum::<f64>() / spatial as f64);
            max.push(vals.fold(f32::NEG_INFINITY, f32::max));
        }
    }
    (avg, max)
}

#[test]
fn taps_summarise_what_a_network_cut_at_that_layer_outputs() {
    let weights = narrow_weights();
    let net = ConvStack::from_weights(3, NARROW, &weights).unwrap();
    assert_eq!(net.layer_names()[..3], ["conv1_1", "conv1_2", "pool1"]);
    assert_eq!(net.layer_names().last().unwrap(), "pool5");
    let (n, h, w) = (3, 37, 45); // odd sizes: pools floor
    let x: Vec<f32> = (0..n * h * w * 3)
        .map(|i| ((i * 7919) % 255) as f32 - 120.0)
        .collect();
    let names = [
        "conv1_2", "pool1", "conv3_3", "conv4_3", "pool4", "conv5_3", "pool5",
    ];
    let taps: Vec<usize> = names.iter().map(|t| net.layer_index(t).unwrap()).collect();
    let (out, sums) = net.forward_with_taps(&x, n, h, w, &taps).unwrap();
    assert_eq!(out, net.forward(&x, n, h, w).unwrap(), "taps change pool5");
    for ((name, &t), s) in names.iter().zip(&taps).zip(&sums) {
        let convs = NARROW[..=t].iter().filter(|l| matches!(l, Conv(_))).count();
        let cut = ConvStack::from_weights(3, &NARROW[..=t], &weights[..convs]).unwrap();
        let maps = cut.forward(&x, n, h, w).unwrap();
        let (_, _, c) = cut.output_shape(h, w).unwrap();
        assert_eq!(s.channels, c, "{name}");
        let (avg, max) = plain_summary(&maps, n, c);
        assert_eq!(s.max, max, "{name}: max");
        for (i, (a, b)) in s.avg.iter().zip(&avg).enumerate() {
            assert!(
                (f64::from(*a) - b).abs() <= 1e-6 * b.abs().max(1e-3),
                "{name}: avg {i}: {a} vs {b}"
            );
        }
    }
    let e = net.layer_index("conv6_1").unwrap_err().to_string();
    assert!(e.contains("conv6_1") && e.contains("conv5_3"), "{e}");
}

#[test]
fn the_flip_view_mirrors_the_image() {
    // 1 x 2 x 3 RGB: flipping reverses each row's pixels.
    let img: Vec<u8> = (0..18).collect();
    assert_eq!(
        flip_rgb(&img, 1, 2, 3),
        vec![6, 7, 8, 3, 4, 5, 0, 1, 2, 15, 16, 17, 12, 13, 14, 9, 10, 11]
    );
    let net = ConvStack::from_weights(3, NARROW, &narrow_weights()).unwrap();
    let (h, w) = (32, 32);
    let p = Params {
        views: vec![View::Original, View::Flip],
        taps: vec!["conv5_3".into()],
        batch_size: 1,
        ..Params::default()
    };
    // A left-right symmetric image: both views give the same features.
    let mut sym = vec![0u8; h * w * 3];
    for y in 0..h {
        for x in 0..w / 2 {
            for c in 0..3 {
                let v = ((x * 31 + y * 17 + c * 101) % 251) as u8;
                sym[(y * w + x) * 3 + c] = v;
                sym[(y * w + (w - 1 - x)) * 3 + c] = v;
            }
        }
    }
    let v = extract(&net, &p, &sym, (1, h, w), &mut |_| {}).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!((v[0].view, v[1].view), (View::Original, View::Flip));
    assert_eq!(v[0].features, v[1].features);
    assert_eq!(v[0].taps, v[1].taps);
    // An asymmetric image: the flip view is the network on the mirrored pixels.
    let two: Vec<u8> = (0..2 * h * w * 3).map(|i| ((i * 13) % 256) as u8).collect();
    let v = extract(&net, &p, &two, (2, h, w), &mut |_| {}).unwrap();
    let mirrored = InputConvention::Caffe.from_rgb(&flip_rgb(&two, 2, h, w));
    assert_eq!(v[1].features, net.forward(&mirrored, 2, h, w).unwrap());
    assert_ne!(v[0].features, v[1].features);
}

#[test]
fn views_and_taps_are_checked_before_a_run() {
    use pipeline::Validate;
    let bad = |p: Params| p.validate().unwrap_err();
    let e = bad(Params {
        views: vec![View::Flip],
        ..Params::default()
    });
    assert!(e.contains("original"), "{e}");
    let e = bad(Params {
        taps: vec!["conv5_4".into()],
        ..Params::default()
    });
    assert!(e.contains("conv5_4") && e.contains("conv5_3"), "{e}");
    let e = bad(Params {
        views: vec![View::Original, View::Original],
        ..Params::default()
    });
    assert!(e.contains("twice"), "{e}");
}

#[test]
fn crop_and_scale_views_are_the_network_on_their_pixels() {
    use vgg_extract::{crop_rgb, resize_rgb, CropAt};
    let net = ConvStack::from_weights(3, NARROW, &narrow_weights()).unwrap();
    let (h, w) = (48, 64);
    let img: Vec<u8> = (0..2 * h * w * 3).map(|i| ((i * 29) % 256) as u8).collect();
    let p = Params {
        views: vec![
            View::Original,
            View::Crop(CropAt::BottomRight),
            View::Scale(96),
        ],
        crop: 0.75,
        taps: vec!["conv5_3".into()],
        batch_size: 1,
        ..Params::default()
    };
    let v = extract(&net, &p, &img, (2, h, w), &mut |_| {}).unwrap();
    assert_eq!(v[0].shape, net.output_shape(h, w).unwrap());
    // The crop: 0.75 of the shorter side (36 pixels), in the bottom-right corner.
    let cropped = crop_rgb(&img, (2, h, w), (h - 36, w - 36), 36);
    let x = InputConvention::Caffe.from_rgb(&cropped);
    assert_eq!(v[1].features, net.forward(&x, 2, 36, 36).unwrap());
    assert_eq!(v[1].shape, net.output_shape(36, 36).unwrap());
    // The rescaling: the whole image at 96 x 96, so pool5 has 3 x 3 cells.
    let scaled = resize_rgb(&img, (2, h, w), (96, 96));
    let x = InputConvention::Caffe.from_rgb(&scaled);
    assert_eq!(v[2].features, net.forward(&x, 2, 96, 96).unwrap());
    assert_eq!((v[2].shape.0, v[2].shape.1), (3, 3));
    assert_eq!(v[2].taps[0].avg.len(), 2 * v[2].taps[0].channels);
}

#[test]
fn unknown_views_and_bad_crops_are_refused_with_the_name() {
    use pipeline::Validate;
    let parse = |t: &str| {
        toml::from_str::<Params>(t)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let e = parse("views = [\"original\", \"mirror\"]");
    assert!(e.contains("mirror") && e.contains("crop-center"), "{e}");
    let e = parse("views = [\"original\", \"scale-8\"]");
    assert!(e.contains("scale-8"), "{e}");
    let p: Params = toml::from_str("views = [\"original\", \"crop-tl\", \"scale-320\"]").unwrap();
    assert_eq!(p.views.len(), 3);
    for crop in [0.0, 1.5, f64::NAN] {
        let e = Params {
            crop,
            ..Params::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("crop"), "{e}");
    }
}
