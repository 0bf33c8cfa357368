//! The loader on crafted datasets: both layouts, class names, and every kind of bad input.

use std::fs;
use std::path::Path;

use expect_test::expect;

fn jpeg(seed: u8) -> Vec<u8> {
    let px: Vec<u8> = (0..16 * 12 * 3)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
        .collect();
    let mut out = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new(&mut out)
        .encode(&px, 16, 12, image::ExtendedColorType::Rgb8)
        .unwrap();
    out.into_inner()
}

fn put(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

/// Three good images per split in the Food-11 flat layout.
fn flat_dataset(root: &Path) {
    for (si, split) in loader::SPLITS.iter().enumerate() {
        for c in 0..3 {
            put(
                root,
                &format!("{split}/{c}_{si}.jpg"),
                &jpeg((10 * si + c + 1) as u8),
            );
        }
    }
}

fn skipped_report(m: &loader::Manifest) -> String {
    m.skipped
        .iter()
        .map(|s| format!("{}: {}\n", s.path, s.reason))
        .collect()
}

#[test]
fn flat_layout_with_food11_names() {
    let t = tempfile::tempdir().unwrap();
    flat_dataset(t.path());
    let m = loader::scan(t.path(), false).unwrap();
    assert_eq!(m.layout, "flat");
    // Food-11's names; the eight classes without any image are left out (and said so).
    assert_eq!(m.classes, ["Bread", "Dairy product", "Dessert"]);
    assert_eq!(m.skipped.len(), 1);
    assert_eq!(m.skipped[0].path, "classes without images");
    assert!(m.skipped[0]
        .reason
        .ends_with("Noodles/Pasta, Rice, Seafood, Soup, Vegetable/Fruit"));
    assert_eq!(
        m.splits["training"]
            .iter()
            .map(|e| (e.path.as_str(), e.label))
            .collect::<Vec<_>>(),
        [
            ("training/0_0.jpg", 0),
            ("training/1_0.jpg", 1),
            ("training/2_0.jpg", 2)
        ]
    );
    assert_eq!(m.class_counts()["validation"], [1, 1, 1]);
    assert!(m.leakage.is_empty());
    assert_eq!(
        m.splits["training"][0].digest,
        blake3::hash(&jpeg(1)).to_hex().to_string()
    );
}

#[test]
fn class_folder_layout_with_and_without_classes_txt() {
    let t = tempfile::tempdir().unwrap();
    for (si, split) in loader::SPLITS.iter().enumerate() {
        for (c, name) in ["pizza", "apple_pie"].iter().enumerate() {
            put(
                t.path(),
                &format!("{split}/{name}/img{si}.jpg"),
                &jpeg((si * 2 + c + 1) as u8),
            );
        }
    }
    let m = loader::scan(t.path(), false).unwrap();
    assert_eq!(m.layout, "class-folders");
    assert_eq!(m.classes, ["apple_pie", "pizza"], "folder names, sorted");
    assert_eq!(m.splits["training"][0].path, "training/apple_pie/img0.jpg");
    assert_eq!(m.splits["training"][0].label, 0);
    fs::write(t.path().join("classes.txt"), "0\tpizza\n1\tapple_pie\n").unwrap();
    let m = loader::scan(t.path(), false).unwrap();
    assert_eq!(m.classes, ["pizza", "apple_pie"]);
    assert_eq!(
        m.splits["training"][0].label, 1,
        "apple_pie is class 1 in classes.txt"
    );
}

#[test]
fn every_bad_input_is_skipped_with_its_reason() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    flat_dataset(r);
    put(r, "training/4_0.jpg", b"");
    put(r, "training/.DS_Store", b"\0\0\0\x01Bud1");
    put(r, "training/Thumbs.db", b"thumbs");
    put(r, "training/notes.txt", b"some notes");
    put(
        r,
        "training/5_1.jpg",
        b"this is text pretending to be a jpeg",
    );
    let mut corrupt = jpeg(3)[..2].to_vec();
    corrupt.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x03, 0x08]);
    put(r, "training/6_2.jpg", &corrupt);
    put(r, "training/pizza.jpg", &jpeg(40));
    put(r, "training/12_0.jpg", &jpeg(41));
    put(r, "extra/0_9.jpg", &jpeg(42));
    put(r, "evaluation/1_7.jpg", &jpeg(1)); // same bytes as training/0_0.jpg
    std::os::unix::fs::symlink(r.join("no-such-file.jpg"), r.join("validation/8_8.jpg")).unwrap();
    let m = loader::scan(r, false).unwrap();
    expect![[r#"
        classes without images: no image in any split, left out: Egg, Fried food, Meat, Noodles/Pasta, Rice, Seafood, Soup, Vegetable/Fruit
        extra/: unknown split folder `extra` (1 files not used)
        training/12_0.jpg: class id 12 out of range (11 classes)
        training/4_0.jpg: empty file (0 bytes)
        training/5_1.jpg: not an image (content is not a known image format)
        training/6_2.jpg: corrupt image header: Format error decoding Jpeg: I/O errors Not enough bytes, expected 2 but found 0
        training/Thumbs.db: not an image (system file)
        training/notes.txt: not an image file (extension .txt)
        training/pizza.jpg: name does not fit the layout `<class_id>_<n>.<ext>`
        validation/8_8.jpg: unreadable: No such file or directory (os error 2)
    "#]]
    .assert_eq(&skipped_report(&m));
    assert_eq!(
        m.leakage,
        [vec![
            "evaluation/1_7.jpg".to_string(),
            "training/0_0.jpg".to_string()
        ]]
    );
    assert_eq!(m.splits["training"].len(), 3, "good files are all kept");
    assert_eq!(
        m.splits["evaluation"].len(),
        4,
        "leaked files are kept (and reported)"
    );

    let err = loader::scan(r, true).unwrap_err().to_string();
    assert!(err.ends_with("(on_bad_file = \"error\")"), "{err}");
    assert!(
        err.contains("training/") || err.contains("validation/"),
        "{err}"
    );
}

#[test]
fn missing_split_and_bad_classes_txt_are_errors() {
    let t = tempfile::tempdir().unwrap();
    put(t.path(), "training/0_0.jpg", &jpeg(1));
    let e = loader::scan(t.path(), false).unwrap_err().to_string();
    assert!(
        e.ends_with(
            "no `validation` folder (a dataset needs training/, validation/ and evaluation/)"
        ),
        "{e}"
    );
    flat_dataset(t.path());
    fs::write(t.path().join("classes.txt"), "0\ta\n2\tb\n").unwrap();
    let e = loader::scan(t.path(), false).unwrap_err().to_string();
    assert!(
        e.ends_with("classes.txt: class ids must be 0..1 without gaps"),
        "{e}"
    );
}

#[test]
fn scanning_is_deterministic() {
    let t = tempfile::tempdir().unwrap();
    flat_dataset(t.path());
    assert_eq!(
        loader::scan(t.path(), false).unwrap(),
        loader::scan(t.path(), false).unwrap()
    );
}

#[test]
fn synthetic_images_are_deterministic_and_distinct_per_class() {
    let a = loader::synthetic::render(0, 3, 32, 24, 1);
    assert_eq!(a, loader::synthetic::render(0, 3, 32, 24, 1));
    assert_ne!(a, loader::synthetic::render(0, 4, 32, 24, 1));
    // Mean colour differs between classes.
    let mean =
        |v: &[u8], c: usize| v.chunks(3).map(|p| p[c] as f64).sum::<f64>() / (v.len() / 3) as f64;
    let red = loader::synthetic::render(0, 0, 64, 64, 1);
    let blue = loader::synthetic::render(2, 0, 64, 64, 1);
    assert!(mean(&red, 0) > mean(&blue, 0) && mean(&blue, 2) > mean(&red, 2));
}

#[test]
fn hidden_entries_and_stray_folders_do_not_switch_the_layout() {
    let t = tempfile::tempdir().unwrap();
    flat_dataset(t.path());
    // Notebook checkpoints, macOS metadata, a folder named like an image: all in `training/`.
    fs::create_dir_all(t.path().join("training/.ipynb_checkpoints")).unwrap();
    put(t.path(), "training/.DS_Store", b"junk");
    put(t.path(), "training/x.jpg/inner.jpg", &jpeg(9));
    let m = loader::scan(t.path(), false).unwrap();
    assert_eq!(m.layout, "flat");
    assert_eq!(m.splits["training"].len(), 3);
    expect![[r#"
        classes without images: no image in any split, left out: Egg, Fried food, Meat, Noodles/Pasta, Rice, Seafood, Soup, Vegetable/Fruit
        training/x.jpg/: folder inside a flat split (layout is `<split>/<class_id>_<n>.<ext>`)
    "#]]
    .assert_eq(&skipped_report(&m));
}

#[test]
fn a_file_name_that_is_not_utf8_is_skipped_with_the_true_reason() {
    use std::os::unix::ffi::OsStrExt;
    let t = tempfile::tempdir().unwrap();
    for split in loader::SPLITS {
        put(t.path(), &format!("{split}/apple/a.jpg"), &jpeg(3));
        put(t.path(), &format!("{split}/pear/b.jpg"), &jpeg(5));
    }
    let bad = std::ffi::OsStr::from_bytes(b"caf\xe9.jpg");
    fs::write(t.path().join("training/apple").join(bad), jpeg(7)).unwrap();
    let m = loader::scan(t.path(), false).unwrap();
    assert_eq!(m.layout, "class-folders");
    assert_eq!(m.splits["training"].len(), 2);
    assert_eq!(m.skipped.len(), 1, "{:?}", m.skipped);
    assert!(
        m.skipped[0].reason.contains("not valid UTF-8"),
        "{:?}",
        m.skipped
    );
    assert!(m.skipped[0].path.starts_with("training/apple/caf"));
}

#[test]
fn a_class_without_training_images_is_left_out_or_an_error() {
    let t = tempfile::tempdir().unwrap();
    put(t.path(), "classes.txt", b"apple\npear\nplum\n");
    for (split, classes) in [
        ("training", &[0usize, 1][..]),
        ("validation", &[0, 1, 2][..]),
        ("evaluation", &[0, 1, 2][..]),
    ] {
        for &c in classes {
            put(t.path(), &format!("{split}/{c}_1.jpg"), &jpeg(c as u8 + 1));
        }
    }
    let err = loader::scan(t.path(), true).unwrap_err().to_string();
    assert!(
        err.contains("class `plum` has no training images (1 validation, 1 evaluation files)"),
        "{err}"
    );
    let m = loader::scan(t.path(), false).unwrap();
    assert_eq!(m.classes, ["apple", "pear"]);
    assert_eq!(m.splits["evaluation"].len(), 2);
    expect![[r#"
        class:plum: no training images: class left out (1 validation, 1 evaluation files skipped)
        evaluation/2_1.jpg: class `plum` has no training images (class left out)
        validation/2_1.jpg: class `plum` has no training images (class left out)
    "#]]
    .assert_eq(&skipped_report(&m));
}
