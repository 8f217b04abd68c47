//! Combining the models' answers: pure functions, deterministic for any input.
//!
//! Every ordering is total: probability descending, then `class_index` ascending (and, where
//! models compete, configuration order), so equal inputs always give equal outputs.
//!
//! Models only report their top-k classes, so a class missing from a model's list counts as
//! probability 0 for that model. This slightly underestimates the mean of classes ranked just
//! outside some model's top-k; the winner is unaffected unless k is tiny.
//!
//! Each model's list is expected to hold every class at most once (the caller checks this).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use pipeline_common::api::{AggregationStrategy, ClassScore, ModelAnswer};

/// The aggregated classes, winner first; empty only when `answers` is.
pub fn aggregate(strategy: AggregationStrategy, answers: &[ModelAnswer]) -> Vec<ClassScore> {
    match strategy {
        AggregationStrategy::AverageProbability => average_probability(answers),
        AggregationStrategy::MaxConfidence => max_confidence(answers),
        AggregationStrategy::MajorityVote => majority_vote(answers),
    }
}

/// Most probable first; equal probabilities go to the lower class index.
pub fn by_rank(a: &ClassScore, b: &ClassScore) -> Ordering {
    b.probability
        .total_cmp(&a.probability)
        .then(a.class_index.cmp(&b.class_index))
}

/// A model's most probable class.
fn top1(predictions: &[ClassScore]) -> Option<&ClassScore> {
    predictions.iter().min_by(|a, b| by_rank(a, b))
}

/// Each class any model reported, with its mean probability over all answering models.
fn class_means(answers: &[ModelAnswer]) -> BTreeMap<u16, ClassScore> {
    let mut sums: BTreeMap<u16, (&ClassScore, f64)> = BTreeMap::new();
    for score in answers.iter().flat_map(|a| &a.predictions) {
        // The first model (in configuration order) to name a class provides its id and label.
        sums.entry(score.class_index).or_insert((score, 0.0)).1 += f64::from(score.probability);
    }
    // A usize model count is exact in f64 for any realistic ensemble.
    let models = answers.len().max(1) as f64;
    sums.into_iter()
        .map(|(index, (first, sum))| {
            let mean = ClassScore {
                probability: (sum / models) as f32,
                ..first.clone()
            };
            (index, mean)
        })
        .collect()
}

/// Mean probability of each class over all answering models, highest first.
pub fn average_probability(answers: &[ModelAnswer]) -> Vec<ClassScore> {
    let mut classes: Vec<ClassScore> = class_means(answers).into_values().collect();
    classes.sort_by(by_rank);
    classes
}

/// The single most confident (model, class) wins; the list is that model's own list.
pub fn max_confidence(answers: &[ModelAnswer]) -> Vec<ClassScore> {
    let winner = answers
        .iter()
        .enumerate()
        .filter_map(|(order, answer)| top1(&answer.predictions).map(|top| (order, top, answer)))
        .min_by(|(order_a, top_a, _), (order_b, top_b, _)| {
            by_rank(top_a, top_b).then(order_a.cmp(order_b))
        });
    let Some((_, _, answer)) = winner else {
        return Vec::new();
    };
    let mut classes = answer.predictions.clone();
    classes.sort_by(by_rank);
    classes
}

/// Each model votes for its top-1 class. The voted classes are listed by votes, then by their
/// mean probability over all answering models (the probability they carry), then class index.
pub fn majority_vote(answers: &[ModelAnswer]) -> Vec<ClassScore> {
    let mut votes: BTreeMap<u16, usize> = BTreeMap::new();
    for top in answers.iter().filter_map(|a| top1(&a.predictions)) {
        *votes.entry(top.class_index).or_default() += 1;
    }
    let mut means = class_means(answers);
    let mut voted: Vec<(usize, ClassScore)> = votes
        .into_iter()
        .filter_map(|(index, count)| means.remove(&index).map(|mean| (count, mean)))
        .collect();
    voted.sort_by(|(votes_a, a), (votes_b, b)| votes_b.cmp(votes_a).then_with(|| by_rank(a, b)));
    voted.into_iter().map(|(_, class)| class).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(index: u16, probability: f32) -> ClassScore {
        ClassScore {
            class_index: index,
            class_id: format!("n{index:08}"),
            label: format!("class {index}"),
            probability,
        }
    }

    fn model(name: &str, scores: &[(u16, f32)]) -> ModelAnswer {
        ModelAnswer {
            model: name.to_owned(),
            predictions: scores.iter().map(|&(i, p)| class(i, p)).collect(),
            inference_ms: 1.0,
            latency_ms: 2.0,
        }
    }

    /// (class index, probability rounded to 1e-4) of each aggregated class, in order.
    fn summary(classes: &[ClassScore]) -> Vec<(u16, f32)> {
        classes
            .iter()
            .map(|c| (c.class_index, (c.probability * 10_000.0).round() / 10_000.0))
            .collect()
    }

    const ALL: [AggregationStrategy; 3] = [
        AggregationStrategy::AverageProbability,
        AggregationStrategy::MaxConfidence,
        AggregationStrategy::MajorityVote,
    ];

    #[test]
    fn no_answers_give_no_prediction() {
        for strategy in ALL {
            assert!(aggregate(strategy, &[]).is_empty());
            assert!(aggregate(strategy, &[model("a", &[])]).is_empty());
        }
    }

    #[test]
    fn one_model_is_its_own_ensemble() {
        // Upstream returned nothing for a one-model ensemble.
        let answers = [model("a", &[(7, 0.2), (3, 0.7), (5, 0.1)])];
        let expected = vec![(3, 0.7), (7, 0.2), (5, 0.1)];
        assert_eq!(summary(&average_probability(&answers)), expected);
        assert_eq!(summary(&max_confidence(&answers)), expected);
        assert_eq!(summary(&majority_vote(&answers)), vec![(3, 0.7)]);
    }

    #[test]
    fn agreement() {
        let answers = [
            model("a", &[(1, 0.8), (2, 0.1)]),
            model("b", &[(1, 0.6), (2, 0.3)]),
        ];
        assert_eq!(
            summary(&average_probability(&answers)),
            vec![(1, 0.7), (2, 0.2)]
        );
        assert_eq!(summary(&max_confidence(&answers)), vec![(1, 0.8), (2, 0.1)]);
        assert_eq!(summary(&majority_vote(&answers)), vec![(1, 0.7)]);
    }

    #[test]
    fn disagreement_picks_a_winner() {
        let answers = [
            model("a", &[(1, 0.5), (2, 0.4)]),
            model("b", &[(2, 0.9), (1, 0.05)]),
        ];
        // Means: class 2 = 0.65, class 1 = 0.275.
        assert_eq!(
            summary(&average_probability(&answers)),
            vec![(2, 0.65), (1, 0.275)]
        );
        assert_eq!(
            summary(&max_confidence(&answers)),
            vec![(2, 0.9), (1, 0.05)]
        );
        // One vote each; the higher mean wins the tie.
        assert_eq!(
            summary(&majority_vote(&answers)),
            vec![(2, 0.65), (1, 0.275)]
        );
    }

    #[test]
    fn most_votes_beat_highest_probability() {
        let answers = [
            model("a", &[(1, 0.4), (2, 0.3)]),
            model("b", &[(1, 0.35), (2, 0.3)]),
            model("c", &[(2, 0.99)]),
        ];
        assert_eq!(
            summary(&majority_vote(&answers)),
            vec![(1, 0.25), (2, 0.53)]
        );
        // Both others follow probability.
        assert_eq!(average_probability(&answers)[0].class_index, 2);
        assert_eq!(max_confidence(&answers)[0].class_index, 2);
    }

    #[test]
    fn a_class_missing_from_a_model_counts_as_zero() {
        let answers = [
            model("a", &[(1, 0.6), (3, 0.3)]),
            model("b", &[(1, 0.5), (4, 0.4)]),
        ];
        assert_eq!(
            summary(&average_probability(&answers)),
            vec![(1, 0.55), (4, 0.2), (3, 0.15)]
        );
        // The list of max_confidence is the winning model's list only.
        assert_eq!(summary(&max_confidence(&answers)), vec![(1, 0.6), (3, 0.3)]);
    }

    #[test]
    fn ties_are_broken_deterministically() {
        // Equal means: the lower class index first.
        let answers = [model("a", &[(9, 0.5), (4, 0.5)])];
        assert_eq!(
            summary(&average_probability(&answers)),
            vec![(4, 0.5), (9, 0.5)]
        );
        assert_eq!(summary(&majority_vote(&answers)), vec![(4, 0.5)]);

        // Equal votes and equal means: the lower class index wins.
        let answers = [
            model("a", &[(8, 0.6), (2, 0.4)]),
            model("b", &[(2, 0.6), (8, 0.4)]),
        ];
        assert_eq!(summary(&majority_vote(&answers)), vec![(2, 0.5), (8, 0.5)]);
        assert_eq!(
            summary(&average_probability(&answers)),
            vec![(2, 0.5), (8, 0.5)]
        );
        // Equally confident models: the lower class index, whatever the model order.
        assert_eq!(max_confidence(&answers)[0].class_index, 2);
        let reversed = [answers[1].clone(), answers[0].clone()];
        assert_eq!(max_confidence(&reversed)[0].class_index, 2);

        // Same class, same confidence: the first configured model's list.
        let answers = [
            model("a", &[(5, 0.7), (6, 0.3)]),
            model("b", &[(5, 0.7), (7, 0.2)]),
        ];
        assert_eq!(summary(&max_confidence(&answers)), vec![(5, 0.7), (6, 0.3)]);
    }

    #[test]
    fn unsorted_model_lists_are_ranked() {
        let answers = [model("a", &[(3, 0.1), (1, 0.2), (2, 0.7)])];
        assert_eq!(majority_vote(&answers)[0].class_index, 2);
        assert_eq!(
            summary(&max_confidence(&answers)),
            vec![(2, 0.7), (1, 0.2), (3, 0.1)]
        );
    }

    #[test]
    fn class_names_come_from_the_first_model_naming_them() {
        let mut b = model("b", &[(1, 0.5)]);
        b.predictions[0].label = "other".to_owned();
        let answers = [model("a", &[(1, 0.5)]), b];
        for strategy in ALL {
            assert_eq!(
                aggregate(strategy, &answers)[0].label,
                "class 1",
                "{strategy:?}"
            );
        }
    }
}
