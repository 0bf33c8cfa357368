//! Stage `loader`: a dataset folder becomes a manifest of labelled files, checked one by one.
//!
//! Layouts are detected from the `training` split: (a) Food-11 flat,
//! `<split>/<class_id>_<n>.<ext>`; (b) class folders, `<split>/<class name or id>/<file>`.
//! Class names come from `classes.txt` when present, else from the class folders (b), else
//! Food-11's eleven names (a).
//!
//! Nothing is dropped silently: each file that cannot be used is skipped with its reason
//! (listed in the manifest's metadata) or, with `on_bad_file = "error"`, stops the stage with
//! that reason. Hidden entries (`.*`) are ignored; a file whose name is not UTF-8 is skipped
//! with that reason; a class without training images is left out (its other files skipped) or,
//! with `on_bad_file = "error"`, stops the stage. Here only cheap checks run (readable, non-empty, an image header with sane
//! dimensions); full decoding is `preprocess`'s job, which reports what fails there.
//!
//! Without a dataset (`dataset.root` empty) the loader generates a small deterministic
//! synthetic set ([`synthetic`]) and embeds its PNG bytes in the manifest, so the whole study
//! runs on a fresh clone.

mod scan;
mod stage;
pub mod synthetic;

pub use contracts::{Entry, Manifest, Skipped, SPLITS};
pub use scan::{scan, scan_with_progress, Layout, ScanError};
pub use stage::{Loader, OnBadFile, Params, SyntheticKind, CACHE_VERSION};

/// Food-11's class names, in class-id order.
pub const FOOD11_CLASSES: [&str; 11] = [
    "Bread",
    "Dairy product",
    "Dessert",
    "Egg",
    "Fried food",
    "Meat",
    "Noodles/Pasta",
    "Rice",
    "Seafood",
    "Soup",
    "Vegetable/Fruit",
];
