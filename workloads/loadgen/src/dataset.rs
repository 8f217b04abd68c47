//! The images to send: found once under a folder, read into memory once, each with the ground
//! truth its file name carries (if any).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use walkdir::WalkDir;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("dataset folder {0} does not exist or is not a folder")]
    NotAFolder(PathBuf),
    #[error("cannot list the dataset folder {path}: {source}")]
    Walk {
        path: PathBuf,
        #[source]
        source: walkdir::Error,
    },
    #[error("no images (.jpg, .jpeg or .png) found under {0}")]
    NoImages(PathBuf),
    #[error("cannot read image {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One image as it will be uploaded.
#[derive(Debug, Clone)]
pub struct Image {
    /// Sent as the multipart file name.
    pub file_name: String,
    pub content_type: &'static str,
    /// WordNet id the file name claims, e.g. `n02105855`.
    pub truth: Option<String>,
    /// Shared by every request that sends this image (cloning is a reference count).
    pub bytes: Bytes,
}

impl Image {
    /// `None` when the file name does not have an image extension we send.
    pub fn new(file_name: impl Into<String>, bytes: Bytes) -> Option<Self> {
        let file_name = file_name.into();
        let content_type = content_type(Path::new(&file_name))?;
        let truth = ground_truth(&file_name).map(str::to_owned);
        Some(Self {
            file_name,
            content_type,
            truth,
            bytes,
        })
    }
}

/// A non-empty set of images.
#[derive(Debug, Clone)]
pub struct Dataset {
    images: Vec<Image>,
}

impl Dataset {
    /// Finds and reads every image under `root`.
    pub fn load(root: &Path) -> Result<Self, DatasetError> {
        let mut images = Vec::new();
        for path in find_images(root)? {
            let bytes = std::fs::read(&path).map_err(|source| DatasetError::Read {
                path: path.clone(),
                source,
            })?;
            let file_name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(image) = Image::new(file_name, Bytes::from(bytes)) {
                images.push(image);
            }
        }
        Self::from_images(images).ok_or_else(|| DatasetError::NoImages(root.to_owned()))
    }

    /// `None` when `images` is empty, as there would be nothing to choose from.
    pub fn from_images(images: Vec<Image>) -> Option<Self> {
        (!images.is_empty()).then_some(Self { images })
    }

    pub fn images(&self) -> &[Image] {
        &self.images
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Always false; present because clippy expects it next to `len`.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&Image> {
        self.images.get(index)
    }

    /// Images whose file name carries a ground truth.
    pub fn with_truth(&self) -> usize {
        self.images.iter().filter(|i| i.truth.is_some()).count()
    }
}

/// Every image file under `root`, recursively, sorted by path so that a seed picks the same
/// images on every machine (directory order is filesystem-dependent).
pub fn find_images(root: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    if !root.is_dir() {
        return Err(DatasetError::NotAFolder(root.to_owned()));
    }
    let mut paths = Vec::new();
    // Datasets are often symlinked into place; walkdir detects link loops.
    for entry in WalkDir::new(root).follow_links(true) {
        let entry = entry.map_err(|source| DatasetError::Walk {
            path: root.to_owned(),
            source,
        })?;
        if entry.file_type().is_file() && content_type(entry.path()).is_some() {
            paths.push(entry.into_path());
        }
    }
    if paths.is_empty() {
        return Err(DatasetError::NoImages(root.to_owned()));
    }
    paths.sort();
    Ok(paths)
}

/// The content type sent for a file, from its extension (any case); `None` for other files.
pub fn content_type(path: &Path) -> Option<&'static str> {
    let extension = path.extension()?.to_str()?.to_ascii_lowercase();
    match extension.as_str() {
        "jpg" | "jpeg" => Some("image/jpeg"),
        "png" => Some("image/png"),
        _ => None,
    }
}

/// The WordNet id in an ImageNet-style file name: the text after the last `_` of the stem, when
/// it is `n` followed by 8 digits (`ILSVRC2012_val_00000003_n02105855.JPEG` → `n02105855`).
pub fn ground_truth(file_name: &str) -> Option<&str> {
    let stem = Path::new(file_name).file_stem()?.to_str()?;
    let (_, candidate) = stem.rsplit_once('_')?;
    let digits = candidate.strip_prefix('n')?;
    (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truth_is_parsed_from_imagenet_names() {
        assert_eq!(
            ground_truth("ILSVRC2012_val_00000003_n02105855.JPEG"),
            Some("n02105855")
        );
        assert_eq!(ground_truth("cat_n02123045.jpg"), Some("n02123045"));
        assert_eq!(ground_truth("a_b_c_n01440764.png"), Some("n01440764"));
    }

    #[test]
    fn names_without_a_wordnet_id_have_no_truth() {
        for name in [
            "ILSVRC2012_val_00000003.JPEG",
            "n01440764_10026.JPEG", // ImageNet train names put the id first
            "n02105855.jpg",        // no `_`
            "x_n0210585.jpg",       // 7 digits
            "x_n021058555.jpg",     // 9 digits
            "x_N02105855.jpg",      // WordNet ids are lower case
            "x_n0210585a.jpg",
            "x_n02105855_.jpg",
            "x_n٠١٢٣٤٥٦٧.jpg", // non-ASCII digits
            "",
            "_",
            ".jpg",
        ] {
            assert_eq!(ground_truth(name), None, "{name:?}");
        }
    }

    #[test]
    fn content_type_follows_the_extension_in_any_case() {
        assert_eq!(content_type(Path::new("a.jpg")), Some("image/jpeg"));
        assert_eq!(content_type(Path::new("a.JPEG")), Some("image/jpeg"));
        assert_eq!(content_type(Path::new("a.JpG")), Some("image/jpeg"));
        assert_eq!(content_type(Path::new("a.PNG")), Some("image/png"));
        assert_eq!(content_type(Path::new("a.gif")), None);
        assert_eq!(content_type(Path::new("a.jpg.bak")), None);
        assert_eq!(content_type(Path::new("jpg")), None);
        assert_eq!(content_type(Path::new("a.")), None);
    }

    fn write(root: &Path, relative: &str, contents: &[u8]) {
        let path = root.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, contents).expect("write");
    }

    #[test]
    fn images_are_found_recursively_and_filtered_by_extension() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(root, "top_n01440764.JPEG", b"one");
        write(root, "a/b/deep.png", b"two");
        write(root, "a/Mixed.Jpg", b"three");
        write(root, "a/notes.txt", b"no");
        write(root, "a/b/archive.jpg.bak", b"no");
        write(root, "a/b/noext", b"no");
        std::fs::create_dir_all(root.join("a/dir.jpg")).expect("a folder named like an image");

        let found = find_images(root).expect("finds");
        let relative: Vec<_> = found
            .iter()
            .map(|p| p.strip_prefix(root).expect("under root").to_path_buf())
            .collect();
        assert_eq!(
            relative,
            [
                PathBuf::from("a/Mixed.Jpg"),
                PathBuf::from("a/b/deep.png"),
                PathBuf::from("top_n01440764.JPEG"),
            ]
        );

        let dataset = Dataset::load(root).expect("loads");
        assert_eq!(dataset.len(), 3);
        assert_eq!(dataset.with_truth(), 1);
        let top = dataset
            .images()
            .iter()
            .find(|i| i.file_name == "top_n01440764.JPEG")
            .expect("loaded");
        assert_eq!(top.bytes.as_ref(), b"one");
        assert_eq!(top.content_type, "image/jpeg");
        assert_eq!(top.truth.as_deref(), Some("n01440764"));
        let deep = dataset.get(1).expect("second");
        assert_eq!(
            (deep.file_name.as_str(), deep.content_type),
            ("deep.png", "image/png")
        );
    }

    #[test]
    fn empty_or_missing_folders_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "readme.md", b"no images here");
        let err = Dataset::load(dir.path()).expect_err("no images");
        assert!(matches!(err, DatasetError::NoImages(_)));
        assert!(err.to_string().contains("no images"), "{err}");

        let missing = dir.path().join("missing");
        assert!(matches!(
            Dataset::load(&missing),
            Err(DatasetError::NotAFolder(_))
        ));
        let file = dir.path().join("readme.md");
        assert!(matches!(
            Dataset::load(&file),
            Err(DatasetError::NotAFolder(_))
        ));
    }

    #[test]
    fn in_memory_images() {
        assert!(Image::new("x.gif", Bytes::new()).is_none());
        assert!(Dataset::from_images(Vec::new()).is_none());
        let image = Image::new("x_n01440764.png", Bytes::from_static(b"px")).expect("png");
        assert_eq!(image.truth.as_deref(), Some("n01440764"));
        assert_eq!(image.content_type, "image/png");
    }
}
