//! Image preparation, exactly what every model receives: decode (any common format, EXIF
//! orientation applied), convert to 8-bit RGB, squash-resize to 224×224 with an area-averaging
//! filter, serialise as HWC bytes. No normalisation here; each model does its own.

use std::io::Cursor;

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageDecoder as _, ImageFormat, ImageReader, RgbImage};
use pipeline_common::api::{IMAGE_BYTES, IMAGE_SIDE};

/// Bounds that keep a hostile file from exhausting memory: dimensions are checked against
/// them from the header, before any pixel buffer is allocated.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_side: u32,
    pub max_alloc_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_side: 12_000,
            max_alloc_bytes: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("the image is empty")]
    Empty,
    #[error("unsupported or unrecognised image format; send JPEG, PNG, WebP, GIF, BMP or TIFF")]
    UnknownFormat,
    #[error("cannot decode the {format} image: {message}")]
    Undecodable {
        format: &'static str,
        message: String,
    },
    #[error(
        "image dimensions exceed the limit of {max_side} pixels per side or the decoder's memory budget"
    )]
    TooLarge { max_side: u32 },
    #[error("cannot resize the image: {0}")]
    Resize(String),
}

/// A decoded image and what we learned while decoding it.
#[derive(Debug)]
pub struct Decoded {
    pub image: RgbImage,
    pub format: &'static str,
}

/// Decodes `bytes` (format sniffed from the content, not trusted from headers) into upright
/// 8-bit RGB. Grayscale is replicated, alpha dropped, 16-bit reduced, as upstream's OpenCV did.
pub fn decode(bytes: &[u8], limits: DecodeLimits) -> Result<Decoded, PrepareError> {
    if bytes.is_empty() {
        return Err(PrepareError::Empty);
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| PrepareError::UnknownFormat)?;
    let format = reader.format().ok_or(PrepareError::UnknownFormat)?;
    let format_name = format_name(format).ok_or(PrepareError::UnknownFormat)?;
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(limits.max_side);
    image_limits.max_image_height = Some(limits.max_side);
    image_limits.max_alloc = Some(limits.max_alloc_bytes);
    reader.limits(image_limits);

    let classify = |error: image::ImageError| match error {
        image::ImageError::Limits(_) => PrepareError::TooLarge {
            max_side: limits.max_side,
        },
        image::ImageError::Unsupported(_) => PrepareError::UnknownFormat,
        other => PrepareError::Undecodable {
            format: format_name,
            message: other.to_string(),
        },
    };
    if format == ImageFormat::Jpeg && !has_jpeg_end_marker(bytes) {
        // The JPEG decoder fills a cut-off file with grey and "succeeds"; classifying that
        // would answer confidently about an image the client never fully sent.
        return Err(PrepareError::Undecodable {
            format: format_name,
            message: "truncated: no end-of-image marker".to_owned(),
        });
    }
    let mut decoder = reader.into_decoder().map_err(classify)?;
    // Not every decoder honours `max_alloc`; refuse from the header before any pixel is read.
    if decoder.total_bytes() > limits.max_alloc_bytes {
        return Err(PrepareError::TooLarge {
            max_side: limits.max_side,
        });
    }
    let orientation = decoder.orientation().map_err(classify)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(classify)?;
    image.apply_orientation(orientation);
    Ok(Decoded {
        image: image.into_rgb8(),
        format: format_name,
    })
}

/// Whether a JPEG ends with its EOI marker (`FF D9`), allowing trailing zero padding.
fn has_jpeg_end_marker(bytes: &[u8]) -> bool {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes[..end].ends_with(&[0xFF, 0xD9])
}

fn format_name(format: ImageFormat) -> Option<&'static str> {
    Some(match format {
        ImageFormat::Jpeg => "jpeg",
        ImageFormat::Png => "png",
        ImageFormat::WebP => "webp",
        ImageFormat::Gif => "gif",
        ImageFormat::Bmp => "bmp",
        ImageFormat::Tiff => "tiff",
        _ => return None,
    })
}

/// Squashes `image` to 224×224 (aspect ratio ignored, like upstream) and returns the
/// [`IMAGE_BYTES`] HWC RGB bytes. Shrinking averages the covered source area (OpenCV's
/// `INTER_AREA`); enlarging interpolates bilinearly, as `INTER_AREA` does for upscaling.
pub fn resize_to_model_input(image: RgbImage) -> Result<Vec<u8>, PrepareError> {
    let side = IMAGE_SIDE as u32;
    let (width, height) = image.dimensions();
    if (width, height) == (side, side) {
        return Ok(image.into_raw());
    }
    let filter = if width >= side && height >= side {
        FilterType::Box
    } else {
        FilterType::Bilinear
    };
    let source = Image::from_vec_u8(width, height, image.into_raw(), PixelType::U8x3)
        .map_err(|e| PrepareError::Resize(e.to_string()))?;
    let mut target = Image::new(side, side, PixelType::U8x3);
    Resizer::new()
        .resize(
            &source,
            &mut target,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(filter)),
        )
        .map_err(|e| PrepareError::Resize(e.to_string()))?;
    let bytes = target.into_vec();
    debug_assert_eq!(bytes.len(), IMAGE_BYTES);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, LumaA, Rgb, Rgba};

    fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).expect("encode");
        out.into_inner()
    }

    fn pixel(bytes: &[u8], x: usize, y: usize) -> [u8; 3] {
        let at = (y * IMAGE_SIDE + x) * 3;
        [bytes[at], bytes[at + 1], bytes[at + 2]]
    }

    #[test]
    fn output_is_224_by_224_rgb_hwc() {
        // Left half red, right half blue: after resizing the left column is red, the right blue.
        let image = RgbImage::from_fn(640, 480, |x, _| {
            if x < 320 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        let bytes = resize_to_model_input(image).expect("resize");
        assert_eq!(bytes.len(), IMAGE_BYTES);
        assert_eq!(pixel(&bytes, 0, 0), [255, 0, 0]);
        assert_eq!(pixel(&bytes, 0, 223), [255, 0, 0]);
        assert_eq!(pixel(&bytes, 223, 100), [0, 0, 255]);
    }

    #[test]
    fn halving_averages_each_two_by_two_block() {
        // A 448×448 checkerboard of single pixels averages to uniform grey at 224.
        let image = RgbImage::from_fn(448, 448, |x, y| {
            if (x + y) % 2 == 0 {
                Rgb([200, 100, 0])
            } else {
                Rgb([0, 100, 200])
            }
        });
        let bytes = resize_to_model_input(image).expect("resize");
        for value in bytes.chunks_exact(3) {
            assert_eq!(value, [100, 100, 100]);
        }
    }

    #[test]
    fn small_images_are_enlarged() {
        let image = RgbImage::from_pixel(10, 30, Rgb([1, 2, 3]));
        let bytes = resize_to_model_input(image).expect("resize");
        assert_eq!(bytes.len(), IMAGE_BYTES);
        assert!(bytes.chunks_exact(3).all(|p| p == [1, 2, 3]));
    }

    #[test]
    fn exact_size_passes_through_untouched() {
        let image = RgbImage::from_fn(224, 224, |x, y| Rgb([x as u8, y as u8, 7]));
        let bytes = resize_to_model_input(image).expect("resize");
        assert_eq!(pixel(&bytes, 5, 9), [5, 9, 7]);
    }

    #[test]
    fn grayscale_alpha_and_16_bit_become_8_bit_rgb() {
        let gray = DynamicImage::ImageLuma8(ImageBuffer::from_pixel(4, 4, Luma([77])));
        let decoded =
            decode(&encode(&gray, ImageFormat::Png), DecodeLimits::default()).expect("gray");
        assert_eq!(decoded.image.get_pixel(0, 0), &Rgb([77, 77, 77]));

        let gray_alpha = DynamicImage::ImageLumaA8(ImageBuffer::from_pixel(4, 4, LumaA([50, 0])));
        let decoded = decode(
            &encode(&gray_alpha, ImageFormat::Png),
            DecodeLimits::default(),
        )
        .expect("gray+alpha");
        assert_eq!(
            decoded.image.get_pixel(1, 1),
            &Rgb([50, 50, 50]),
            "alpha dropped, not composited"
        );

        let rgba = DynamicImage::ImageRgba8(ImageBuffer::from_pixel(4, 4, Rgba([10, 20, 30, 128])));
        let decoded =
            decode(&encode(&rgba, ImageFormat::Png), DecodeLimits::default()).expect("rgba");
        assert_eq!(decoded.image.get_pixel(2, 2), &Rgb([10, 20, 30]));

        let deep = DynamicImage::ImageRgb16(ImageBuffer::from_pixel(4, 4, Rgb([65535, 0, 32896])));
        let decoded =
            decode(&encode(&deep, ImageFormat::Png), DecodeLimits::default()).expect("16-bit");
        assert_eq!(decoded.image.get_pixel(3, 3), &Rgb([255, 0, 128]));
        assert_eq!(decoded.format, "png");
    }

    #[test]
    fn all_supported_formats_decode() {
        let image = DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 6, Rgb([120, 60, 30])));
        for (format, name) in [
            (ImageFormat::Jpeg, "jpeg"),
            (ImageFormat::Png, "png"),
            (ImageFormat::WebP, "webp"),
            (ImageFormat::Gif, "gif"),
            (ImageFormat::Bmp, "bmp"),
            (ImageFormat::Tiff, "tiff"),
        ] {
            let decoded = decode(&encode(&image, format), DecodeLimits::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(decoded.format, name);
            assert_eq!(decoded.image.dimensions(), (8, 6));
        }
    }

    /// A JPEG whose EXIF says "rotate 90° clockwise" must come out upright (taller than wide).
    #[test]
    fn exif_orientation_is_applied() {
        let landscape = DynamicImage::ImageRgb8(RgbImage::from_fn(40, 20, |x, _| {
            if x < 20 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        }));
        let jpeg = encode(&landscape, ImageFormat::Jpeg);
        let rotated = with_exif_orientation(&jpeg, 6);
        let decoded = decode(&rotated, DecodeLimits::default()).expect("decode");
        assert_eq!(decoded.image.dimensions(), (20, 40));
        // Orientation 6: the image's left (red) edge ends up on top.
        let top = decoded.image.get_pixel(10, 2);
        assert!(top[0] > 200 && top[2] < 60, "top is red: {top:?}");
    }

    /// Inserts an APP1 EXIF segment with one Orientation tag after the JPEG's SOI marker.
    fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = Vec::new();
        tiff.extend_from_slice(b"MM\0\x2a\0\0\0\x08"); // big-endian TIFF header, IFD at 8
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes()); // count
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]); // value padding
        tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        let mut payload = b"Exif\0\0".to_vec();
        payload.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(
            &u16::try_from(payload.len() + 2)
                .expect("small")
                .to_be_bytes(),
        );
        out.extend_from_slice(&payload);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn broken_inputs_are_typed_errors() {
        assert!(matches!(
            decode(b"", DecodeLimits::default()),
            Err(PrepareError::Empty)
        ));
        assert!(matches!(
            decode(b"hello, I am a text file", DecodeLimits::default()),
            Err(PrepareError::UnknownFormat)
        ));
        let image = DynamicImage::ImageRgb8(RgbImage::from_pixel(64, 64, Rgb([1, 2, 3])));
        let jpeg = encode(&image, ImageFormat::Jpeg);
        assert!(matches!(
            decode(&jpeg[..jpeg.len() / 2], DecodeLimits::default()),
            Err(PrepareError::Undecodable { format: "jpeg", .. })
        ));
        let mut padded = jpeg.clone();
        padded.extend_from_slice(&[0; 16]);
        assert!(
            decode(&padded, DecodeLimits::default()).is_ok(),
            "zero padding after EOI is fine"
        );
        let mut png = encode(&image, ImageFormat::Png);
        let middle = png.len() / 2;
        png[middle..middle + 16].fill(0xAB);
        assert!(matches!(
            decode(&png, DecodeLimits::default()),
            Err(PrepareError::Undecodable { format: "png", .. })
        ));
    }

    #[test]
    fn decompression_bomb_is_refused_from_the_header() {
        let bomb = png_header_claiming(100_000, 100_000);
        assert!(matches!(
            decode(&bomb, DecodeLimits::default()),
            Err(PrepareError::TooLarge { .. })
        ));
        // Within the side limit but over the memory budget.
        let limits = DecodeLimits {
            max_side: 20_000,
            max_alloc_bytes: 64 * 1024 * 1024,
        };
        assert!(matches!(
            decode(&png_header_claiming(10_000, 10_000), limits),
            Err(PrepareError::TooLarge { .. })
        ));
    }

    /// A 60-byte PNG declaring `width`×`height` RGB with an (empty) compressed pixel stream:
    /// what a decompression bomb looks like before inflation.
    pub(crate) fn png_header_claiming(width: u32, height: u32) -> Vec<u8> {
        let mut header = width.to_be_bytes().to_vec();
        header.extend_from_slice(&height.to_be_bytes());
        header.extend_from_slice(&[8, 2, 0, 0, 0]);
        // zlib header, one final empty stored block, Adler-32 of nothing.
        let empty_zlib = [
            0x78, 0x01, 0x01, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x01,
        ];
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        for (kind, data) in [
            (&b"IHDR"[..], &header[..]),
            (b"IDAT", &empty_zlib),
            (b"IEND", &[]),
        ] {
            png.extend_from_slice(&u32::try_from(data.len()).expect("small").to_be_bytes());
            let mut chunk = kind.to_vec();
            chunk.extend_from_slice(data);
            png.extend_from_slice(&chunk);
            png.extend_from_slice(&crc32fast::hash(&chunk).to_be_bytes());
        }
        png
    }
}
