//! The 1000 ImageNet-1k classes in model output order, shipped inside the binary.

use std::sync::LazyLock;

/// One ImageNet class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageNetClass {
    /// WordNet id, e.g. `n01818515`.
    pub wnid: &'static str,
    /// The first of the class's names, e.g. `macaw`.
    pub label: &'static str,
}

pub const CLASS_COUNT: usize = 1000;

static TABLE: &str = include_str!("../data/imagenet_classes.tsv");

static CLASSES: LazyLock<Vec<ImageNetClass>> = LazyLock::new(|| {
    TABLE
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (wnid, names) = line.split_once('\t')?;
            let label = names.split(',').next().unwrap_or(names).trim();
            Some(ImageNetClass { wnid, label })
        })
        .collect()
});

/// All classes, index = model output position.
pub fn classes() -> &'static [ImageNetClass] {
    &CLASSES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_the_thousand_classes_in_order() {
        let classes = classes();
        assert_eq!(classes.len(), CLASS_COUNT);
        assert_eq!(classes[0].wnid, "n01440764");
        assert_eq!(classes[0].label, "tench");
        assert_eq!(classes[88].wnid, "n01818515");
        assert_eq!(classes[88].label, "macaw");
        assert_eq!(classes[385].label, "Indian elephant");
        assert_eq!(classes[386].wnid, "n02504458");
        assert_eq!(classes[934].wnid, "n07697537");
        assert_eq!(classes[934].label, "hotdog");
        assert_eq!(classes[999].label, "toilet tissue");
        for class in classes {
            assert!(
                class.wnid.len() == 9
                    && class.wnid.starts_with('n')
                    && class.wnid[1..].bytes().all(|b| b.is_ascii_digit()),
                "bad WordNet id {class:?}"
            );
            assert!(!class.label.is_empty());
        }
        let mut ids: Vec<_> = classes.iter().map(|c| c.wnid).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), CLASS_COUNT, "WordNet ids are unique");
    }
}
