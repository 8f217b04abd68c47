//! The runner against an in-process HTTP server.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use loadgen::config::LoadMode;

use common::{config, dataset, errors, run, run_until, start};

const CLOSED_1: LoadMode = LoadMode::Closed { concurrency: 1 };

#[tokio::test]
async fn counts_errors_and_accuracy_per_answer() {
    let server = start().await;
    let images = dataset(&[
        "good_n01440764.jpg",
        "wrong_n01443537.PNG",
        "fail.jpeg",
        "big.jpg",
        "junk_n01484850.JPG",
        "accepted.png",
    ]);
    let outcome = run(
        config(&server.url, LoadMode::Closed { concurrency: 3 }, Some(120)),
        images,
    )
    .await;

    let seen = server.seen();
    assert!(seen.violations.is_empty(), "{:?}", seen.violations);
    let [good, wrong, fail, big, junk, accepted] =
        ["good", "wrong", "fail", "big", "junk", "accepted"].map(|p| seen.count(p));
    for (name, count) in [
        ("good", good),
        ("wrong", wrong),
        ("fail", fail),
        ("big", big),
        ("junk", junk),
        ("accepted", accepted),
    ] {
        assert!(count > 0, "seed 7 never picked {name}");
    }
    assert_eq!(seen.files.len(), 120);
    assert_eq!(outcome.sent, 120);

    let stats = &outcome.stats;
    assert_eq!(stats.ok, good + wrong + accepted);
    assert_eq!(stats.classified, good + wrong);
    assert_eq!(stats.accepted, accepted);
    assert_eq!(
        errors(&outcome),
        BTreeMap::from([("http_4xx", big), ("http_5xx", fail), ("decode", junk)])
    );
    assert_eq!(
        stats.status_counts,
        BTreeMap::from([
            (200, good + wrong + junk + accepted),
            (413, big),
            (503, fail)
        ])
    );
    // Only classified answers for images with a WordNet id in their name count.
    assert_eq!(stats.known, good + wrong);
    assert_eq!(stats.correct, good);
    assert_eq!(stats.degraded, wrong);
    assert_eq!(stats.latency_us.len(), stats.ok);
    assert!(!outcome.interrupted);
    assert_eq!((outcome.skipped, outcome.late), (0, 0));
}

#[tokio::test]
async fn a_seed_fixes_the_image_sequence() {
    let server = start().await;
    let images = dataset(&[
        "good_n01440764.jpg",
        "good_n01443537.png",
        "good_n01484850.jpeg",
    ]);
    let mut sequences = Vec::new();
    for seed in [11, 11, 12] {
        let mut config = config(&server.url, CLOSED_1, Some(30));
        config.seed = seed;
        let outcome = run(config, images.clone()).await;
        assert_eq!((outcome.stats.ok, outcome.stats.correct), (30, 30));
        sequences.push(std::mem::take(&mut server.seen().files));
    }
    assert_eq!(sequences[0], sequences[1]);
    assert_ne!(sequences[0], sequences[2]);
}

#[tokio::test]
async fn open_loop_follows_the_schedule() {
    let server = start().await;
    let mode = LoadMode::Open {
        rate: 100.0,
        max_in_flight: 16,
    };
    let outcome = run(
        config(&server.url, mode, Some(20)),
        dataset(&["good_n01440764.jpg"]),
    )
    .await;
    assert_eq!(
        (outcome.sent, outcome.stats.ok, outcome.skipped),
        (20, 20, 0)
    );
    // 20 sends at 100/s span 190 ms: the requests were paced, not sent in a burst.
    assert!(
        outcome.elapsed >= Duration::from_millis(185),
        "{:?}",
        outcome.elapsed
    );
    assert!(
        outcome.elapsed < Duration::from_secs(5),
        "{:?}",
        outcome.elapsed
    );
}

#[tokio::test]
async fn open_loop_skips_sends_beyond_the_in_flight_cap() {
    let server = start().await;
    let mode = LoadMode::Open {
        rate: 100.0,
        max_in_flight: 2,
    };
    let mut config = config(&server.url, mode, None);
    config.duration = Some(Duration::from_millis(250));
    let outcome = run(config, dataset(&["slow400_n01440764.jpg"])).await;
    // The first two requests hold both slots beyond the end of the schedule.
    assert_eq!(outcome.sent, 2);
    assert_eq!(outcome.stats.ok, 2);
    assert!(outcome.skipped >= 15, "skipped {}", outcome.skipped);
    // The run waited for the outstanding requests.
    assert!(
        outcome.elapsed >= Duration::from_millis(400),
        "{:?}",
        outcome.elapsed
    );
}

#[tokio::test]
async fn slow_answers_time_out() {
    let server = start().await;
    let mut config = config(&server.url, LoadMode::Closed { concurrency: 2 }, Some(2));
    config.timeout = Duration::from_millis(200);
    let outcome = run(config, dataset(&["slow3000_n01440764.jpg"])).await;
    assert_eq!(errors(&outcome), BTreeMap::from([("timeout", 2)]));
    assert_eq!(outcome.stats.ok, 0);
    assert!(outcome.stats.status_counts.is_empty());
    assert!(
        outcome.elapsed < Duration::from_secs(2),
        "{:?}",
        outcome.elapsed
    );
}

#[tokio::test]
async fn refused_connections_are_connect_errors() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let url = format!("http://{addr}/preprocessing").parse().expect("url");
    let outcome = run(config(&url, CLOSED_1, Some(3)), dataset(&["a.jpg"])).await;
    assert_eq!(outcome.sent, 3);
    assert_eq!(errors(&outcome), BTreeMap::from([("connect", 3)]));
}

#[tokio::test]
async fn duration_bounds_an_unbounded_request_count() {
    let server = start().await;
    let mut config = config(&server.url, LoadMode::Closed { concurrency: 2 }, None);
    config.duration = Some(Duration::from_millis(300));
    let outcome = run(config, dataset(&["slow20_n01440764.jpg"])).await;
    assert!(outcome.sent >= 2, "sent {}", outcome.sent);
    // Two workers, ≥ 20 ms per request, 300 ms: at most ~30 requests.
    assert!(outcome.sent <= 40, "sent {}", outcome.sent);
    assert_eq!(outcome.stats.ok, outcome.sent);
    assert!(
        outcome.elapsed < Duration::from_secs(3),
        "{:?}",
        outcome.elapsed
    );
}

#[tokio::test]
async fn the_stop_signal_ends_the_run_and_is_reported() {
    let server = start().await;
    let outcome = run_until(
        config(
            &server.url,
            LoadMode::Closed { concurrency: 2 },
            Some(1_000_000),
        ),
        dataset(&["slow10_n01440764.jpg"]),
        tokio::time::sleep(Duration::from_millis(200)),
    )
    .await;
    assert!(outcome.interrupted);
    assert!(
        outcome.sent > 0 && outcome.sent < 1_000,
        "sent {}",
        outcome.sent
    );
    // In-flight requests finished and were counted.
    assert_eq!(outcome.stats.ok, outcome.sent);
}
