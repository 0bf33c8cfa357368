//! Errors for bad input. Every public entry point validates first and never panics on
//! user data.

/// What is wrong with the input of a fit, a grid search or a model's prediction.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LogRegError {
    /// No samples, or samples with no features.
    #[error("empty data: {0}")]
    EmptyData(&'static str),
    /// The feature buffer does not hold `n_samples * n_features` values.
    #[error("shape mismatch: {what} has {got} values, expected {expected}")]
    ShapeMismatch {
        /// Which buffer.
        what: &'static str,
        /// Length expected from the other dimensions.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A label is not below the number of classes.
    #[error("label {label} of sample {sample} is out of range for {n_classes} classes")]
    LabelOutOfRange {
        /// Sample index.
        sample: usize,
        /// The offending label.
        label: usize,
        /// Number of classes of the problem.
        n_classes: usize,
    },
    /// A class has no training sample, so its balanced weight is undefined.
    #[error("class {class} has no training sample (class_weight=\"balanced\" needs every class present)")]
    EmptyClass {
        /// The class without samples.
        class: usize,
    },
    /// A sample weight is negative, NaN or infinite, or the weights up to it sum to
    /// infinity.
    #[error("invalid sample weight {value} of sample {sample} (weights must be finite and non-negative, with a finite sum)")]
    InvalidSampleWeight {
        /// Sample index.
        sample: usize,
        /// The weight.
        value: f64,
    },
    /// The samples of a class have total weight zero, so its balanced weight is undefined.
    #[error("class {class} has zero total sample weight (class_weight=\"balanced\" needs a positive weight per class)")]
    ZeroClassWeight {
        /// The class.
        class: usize,
    },
    /// Fewer than two classes.
    #[error("need at least 2 classes, got {0}")]
    TooFewClasses(usize),
    /// A feature value is NaN or infinite.
    #[error("non-finite feature value {value} at sample {sample}, feature {feature}")]
    NonFiniteFeature {
        /// Sample index.
        sample: usize,
        /// Feature index.
        feature: usize,
        /// The value.
        value: f32,
    },
    /// The inverse regularisation strength is not a positive finite number.
    #[error("c must be positive and finite, got {0}")]
    InvalidC(f64),
    /// The tolerance is negative or not finite.
    #[error("tol must be non-negative and finite, got {0}")]
    InvalidTol(f64),
    /// `max_iter` is zero.
    #[error("max_iter must be at least 1")]
    InvalidMaxIter,
    /// A thread count of zero was requested, or the thread pool could not be built.
    #[error("thread pool: {0}")]
    ThreadPool(String),
    /// A grid search was given no value of C or no solver.
    #[error("empty grid: {0}")]
    EmptyGrid(&'static str),
    /// An error reported by linfa (see the `linfa_compat` module).
    #[error("linfa: {0}")]
    Linfa(String),
    /// Prediction input does not match the model's feature count.
    #[error("feature count mismatch: model has {expected} features, input has {got}")]
    FeatureCountMismatch {
        /// Features the model was fitted on.
        expected: usize,
        /// Features of the input.
        got: usize,
    },
}
