//! What each model expects as input. The service takes the input name, layout, size and
//! normalisation from this per-model profile (overridable by flags), so a different export of
//! the same model, e.g. the true Keras EfficientNetB0 instead of EfficientNet-Lite0, drops in.

use pipeline_common::api::{IMAGE_CHANNELS, IMAGE_SIDE};

/// The models this service knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelKind {
    Mobilenetv2,
    Efficientnetb0,
}

/// Memory order of the model's input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// `[N, H, W, C]` (Keras).
    Nhwc,
    /// `[N, C, H, W]` (PyTorch).
    Nchw,
}

/// Pixel normalisation, named after Keras' `preprocess_input` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Normalization {
    /// 0..255 as float: the model normalises inside its graph (EfficientNet family).
    Raw,
    /// `x / 127.5 - 1` → [-1, 1] (MobileNet family).
    Tf,
    /// `(x / 255 - mean) / std` with ImageNet mean/std, RGB.
    Torch,
    /// RGB → BGR, minus the ImageNet channel means, no scaling (VGG, ResNet50).
    Caffe,
}

/// Input contract of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelProfile {
    pub kind: ModelKind,
    /// File name inside the models directory.
    pub default_file: &'static str,
    pub layout: Layout,
    pub normalization: Normalization,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Mobilenetv2 => "mobilenetv2",
            Self::Efficientnetb0 => "efficientnetb0",
        }
    }

    pub fn profile(self) -> ModelProfile {
        match self {
            Self::Mobilenetv2 => ModelProfile {
                kind: self,
                default_file: "mobilenetv2.onnx",
                layout: Layout::Nhwc,
                normalization: Normalization::Tf,
            },
            // EfficientNet-Lite0 stands in for EfficientNetB0 (no public B0 weights reachable
            // here); both take raw 0..255 NHWC input and normalise inside the graph.
            Self::Efficientnetb0 => ModelProfile {
                kind: self,
                default_file: "efficientnet_lite0.onnx",
                layout: Layout::Nhwc,
                normalization: Normalization::Raw,
            },
        }
    }
}

const TORCH_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const TORCH_STD: [f32; 3] = [0.229, 0.224, 0.225];
const CAFFE_MEAN_BGR: [f32; 3] = [103.939, 116.779, 123.68];

/// Shape of the single-image input tensor.
pub fn input_shape(layout: Layout) -> [usize; 4] {
    match layout {
        Layout::Nhwc => [1, IMAGE_SIDE, IMAGE_SIDE, IMAGE_CHANNELS],
        Layout::Nchw => [1, IMAGE_CHANNELS, IMAGE_SIDE, IMAGE_SIDE],
    }
}

/// Turns 224×224×3 RGB HWC bytes into the model's float input. `pixels` must be exactly
/// [`pipeline_common::api::IMAGE_BYTES`] long (the handler checks).
pub fn to_input(pixels: &[u8], layout: Layout, normalization: Normalization) -> Vec<f32> {
    let plane = IMAGE_SIDE * IMAGE_SIDE;
    let mut out = vec![0.0_f32; pixels.len()];
    for (index, &value) in pixels.iter().enumerate() {
        let channel = index % IMAGE_CHANNELS;
        let x = f32::from(value);
        let (target_channel, normalised) = match normalization {
            Normalization::Raw => (channel, x),
            Normalization::Tf => (channel, x / 127.5 - 1.0),
            Normalization::Torch => (
                channel,
                (x / 255.0 - TORCH_MEAN[channel]) / TORCH_STD[channel],
            ),
            Normalization::Caffe => {
                let bgr = IMAGE_CHANNELS - 1 - channel;
                (bgr, x - CAFFE_MEAN_BGR[bgr])
            }
        };
        let pixel = index / IMAGE_CHANNELS;
        let position = match layout {
            Layout::Nhwc => pixel * IMAGE_CHANNELS + target_channel,
            Layout::Nchw => target_channel * plane + pixel,
        };
        out[position] = normalised;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_common::api::IMAGE_BYTES;

    fn image_with_first_pixel(rgb: [u8; 3]) -> Vec<u8> {
        let mut pixels = vec![0_u8; IMAGE_BYTES];
        pixels[..3].copy_from_slice(&rgb);
        pixels
    }

    #[test]
    fn tf_mode_maps_to_minus_one_one() {
        let input = to_input(
            &image_with_first_pixel([0, 255, 51]),
            Layout::Nhwc,
            Normalization::Tf,
        );
        assert_eq!(input.len(), IMAGE_BYTES);
        assert_eq!(input[0], -1.0);
        assert_eq!(input[1], 1.0);
        assert!((input[2] - (51.0 / 127.5 - 1.0)).abs() < 1e-6);
    }

    #[test]
    fn raw_mode_keeps_pixel_values() {
        let input = to_input(
            &image_with_first_pixel([7, 8, 9]),
            Layout::Nhwc,
            Normalization::Raw,
        );
        assert_eq!(&input[..4], &[7.0, 8.0, 9.0, 0.0]);
    }

    #[test]
    fn nchw_puts_each_channel_in_its_own_plane() {
        let input = to_input(
            &image_with_first_pixel([1, 2, 3]),
            Layout::Nchw,
            Normalization::Raw,
        );
        let plane = IMAGE_SIDE * IMAGE_SIDE;
        assert_eq!(input[0], 1.0);
        assert_eq!(input[plane], 2.0);
        assert_eq!(input[2 * plane], 3.0);
        assert_eq!(input[1], 0.0);
    }

    #[test]
    fn caffe_mode_swaps_to_bgr_and_centres() {
        let input = to_input(
            &image_with_first_pixel([10, 20, 30]),
            Layout::Nhwc,
            Normalization::Caffe,
        );
        assert!((input[0] - (30.0 - 103.939)).abs() < 1e-4, "B first");
        assert!((input[1] - (20.0 - 116.779)).abs() < 1e-4);
        assert!((input[2] - (10.0 - 123.68)).abs() < 1e-4, "R last");
    }

    #[test]
    fn torch_mode_uses_imagenet_statistics() {
        let input = to_input(
            &image_with_first_pixel([255, 0, 0]),
            Layout::Nhwc,
            Normalization::Torch,
        );
        assert!((input[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
        assert!((input[1] - (0.0 - 0.456) / 0.224).abs() < 1e-5);
    }

    #[test]
    fn profiles_match_the_models_readme() {
        let mobilenet = ModelKind::Mobilenetv2.profile();
        assert_eq!(
            (mobilenet.layout, mobilenet.normalization),
            (Layout::Nhwc, Normalization::Tf)
        );
        let efficientnet = ModelKind::Efficientnetb0.profile();
        assert_eq!(
            (efficientnet.layout, efficientnet.normalization),
            (Layout::Nhwc, Normalization::Raw)
        );
        assert_eq!(input_shape(Layout::Nchw), [1, 3, 224, 224]);
    }
}
