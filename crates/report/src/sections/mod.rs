//! The report's sections, one file each, in the order the page shows them; `run` writes the
//! folder. Each section is a function over the [`crate::results::Builder`] and the models'
//! results; none imports another.

pub(crate) mod data;
pub(crate) mod grid;
pub(crate) mod mistakes;
pub(crate) mod models;
pub(crate) mod overview;
pub(crate) mod run;
pub(crate) mod seeds;
