//! Non-finite values are errors, never features: ReLU and max-pooling that carry a NaN or an
//! infinity on to the output (`f32::max` would drop a NaN, and ReLU a -inf, so an overflow
//! inside a layer would silently become zeros), and the check of a batch's output.

/// `max(x, 0)`, except that a NaN or an infinity stays itself (so that an overflow reaches the
/// output, where it is found). Equal to `x.max(0.0)`, bit for bit, for every finite `x`.
/// Branch-free (a compare and a select), so the loops around it vectorise.
#[inline(always)]
pub(crate) fn nan_relu(x: f32) -> f32 {
    let r = x.max(0.0);
    if finite(x) {
        r
    } else {
        x
    }
}

/// `a.max(b)`, except that a NaN or an infinity in either gives a NaN. Equal to `a.max(b)`,
/// bit for bit, when both are finite.
#[inline(always)]
pub(crate) fn nan_max(a: f32, b: f32) -> f32 {
    let m = a.max(b);
    if finite(a) & finite(b) {
        m
    } else {
        f32::NAN
    }
}

/// Whether `x` is neither a NaN nor an infinity (its exponent bits are not all set): integer
/// operations on the same lanes, no branch.
#[inline(always)]
fn finite(x: f32) -> bool {
    x.to_bits() & EXP != EXP
}

const EXP: u32 = 0x7f80_0000;

/// The first of `images` equal parts of `x` that holds a NaN or an infinity, and which.
pub(crate) fn first_non_finite(x: &[f32], images: usize) -> Option<(usize, &'static str)> {
    if images == 0 {
        return None;
    }
    let per = x.len() / images;
    x.chunks(per.max(1)).enumerate().find_map(|(i, img)| {
        // An integer OR over all values vectorises; a value is non-finite when its exponent
        // bits are all set.
        let bad = img
            .chunks(64)
            .map(|c| {
                c.iter()
                    .fold(0u32, |a, v| a | ((v.to_bits() & EXP == EXP) as u32))
            })
            .any(|b| b != 0);
        bad.then(|| {
            let nan = img.iter().any(|v| v.is_nan());
            (i, if nan { "NaN" } else { "an infinity" })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu_and_max_keep_non_finite_values_and_equal_the_plain_ones_otherwise() {
        let finite = [-1.5f32, -0.0, 0.0, 2.5, 1e-40, f32::MAX, f32::MIN];
        for x in finite {
            assert_eq!(nan_relu(x).to_bits(), x.max(0.0).to_bits(), "{x}");
            for y in finite {
                assert_eq!(nan_max(x, y).to_bits(), x.max(y).to_bits(), "{x} {y}");
            }
        }
        assert!(nan_relu(f32::NAN).is_nan());
        assert_eq!(nan_relu(f32::NEG_INFINITY), f32::NEG_INFINITY);
        assert_eq!(nan_relu(f32::INFINITY), f32::INFINITY);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert!(
                nan_max(bad, 1.0).is_nan() && nan_max(1.0, bad).is_nan(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_first_image_with_a_non_finite_value_is_found() {
        let mut x = vec![1.0f32; 3 * 100];
        assert_eq!(first_non_finite(&x, 3), None);
        x[250] = f32::INFINITY;
        assert_eq!(first_non_finite(&x, 3), Some((2, "an infinity")));
        x[120] = f32::NAN;
        assert_eq!(first_non_finite(&x, 3), Some((1, "NaN")));
    }
}
