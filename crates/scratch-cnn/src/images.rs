//! u8 RGB images in (possibly several) row-major chunks, and the caffe transform.

use crate::{Error, Result};

/// Channel means subtracted by Keras's `preprocess_input(mode="caffe")`, in BGR order.
pub const CAFFE_MEAN_BGR: [f32; 3] = [103.939, 116.779, 123.68];

/// N RGB images of `height` x `width` x 3 u8 values, stored in one or more chunks of whole
/// images (as the preprocess stage stores them). Nothing is copied.
#[derive(Clone, Debug)]
pub struct Images<'a> {
    chunks: Vec<&'a [u8]>,
    /// Index of the first image of each chunk, plus the total at the end.
    starts: Vec<usize>,
    height: usize,
    width: usize,
}

impl<'a> Images<'a> {
    /// Images in one contiguous slice of N x `height` x `width` x 3 values.
    pub fn new(data: &'a [u8], height: usize, width: usize) -> Result<Self> {
        Self::from_chunks(vec![data], height, width)
    }

    /// Images in chunks, each holding whole images; the order is chunk order.
    pub fn from_chunks(chunks: Vec<&'a [u8]>, height: usize, width: usize) -> Result<Self> {
        let len = height * width * 3;
        if len == 0 {
            return Err(Error::Invalid(format!("image size {height}x{width}")));
        }
        let mut starts = vec![0];
        for (i, c) in chunks.iter().enumerate() {
            if !c.len().is_multiple_of(len) {
                return Err(Error::Invalid(format!(
                    "chunk {i}: {} bytes are not whole {height}x{width}x3 images",
                    c.len()
                )));
            }
            starts.push(starts[i] + c.len() / len);
        }
        Ok(Images {
            chunks,
            starts,
            height,
            width,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        *self.starts.last().expect("starts has a total")
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image height.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Image width.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.height * self.width * 3
    }

    /// The u8 RGB values of image `i`.
    pub fn image(&self, i: usize) -> &'a [u8] {
        let c = self.starts.partition_point(|&s| s <= i) - 1;
        let len = self.image_len();
        let at = (i - self.starts[c]) * len;
        &self.chunks[c][at..at + len]
    }

    /// The caffe-transformed images `rows` (in that order) as (B, H, W, 3) f32, appended to `out`.
    pub fn caffe_batch(&self, rows: &[usize], out: &mut Vec<f32>) {
        out.reserve(rows.len() * self.image_len());
        for &r in rows {
            caffe_extend(self.image(r), out);
        }
    }
}

/// Keras's caffe preprocessing of RGB u8 values: to f32, RGB -> BGR, minus the ImageNet means.
pub fn caffe_extend(rgb: &[u8], out: &mut Vec<f32>) {
    out.extend(rgb.chunks_exact(3).flat_map(|p| {
        [
            p[2] as f32 - CAFFE_MEAN_BGR[0],
            p[1] as f32 - CAFFE_MEAN_BGR[1],
            p[0] as f32 - CAFFE_MEAN_BGR[2],
        ]
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_and_caffe() {
        let a: Vec<u8> = (0..24).collect(); // two 2x2 images
        let b: Vec<u8> = (100..112).collect(); // one 2x2 image
        let im = Images::from_chunks(vec![&a, &b], 2, 2).unwrap();
        assert_eq!(im.len(), 3);
        assert_eq!(im.image(1), &a[12..24]);
        assert_eq!(im.image(2), &b[..]);
        let mut out = vec![];
        im.caffe_batch(&[2], &mut out);
        assert_eq!(out.len(), 12);
        assert_eq!(out[0], 102.0 - 103.939);
        assert_eq!(out[1], 101.0 - 116.779);
        assert_eq!(out[2], 100.0 - 123.68);
        assert!(Images::from_chunks(vec![&a[..5]], 2, 2).is_err());
    }
}
