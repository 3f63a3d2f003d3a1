//! What the metrics say of a lifecycle: counted where things happen, read as a scrape
//! reads them.

use berth::runtime::fake::Behaviour;
use berth::Store;
use http::StatusCode;
use tokio::time::sleep;

use crate::fixture::*;

/// The scrape's lines of `name`, with the app's label taken out.
fn lines(f: &Fixture, name: &str) -> Vec<String> {
    let text = f.app.metrics().encode().expect("encode");
    let app = format!("app=\"{}\",", f.app.name());
    text.lines()
        .filter(|line| line.starts_with(name))
        .map(|line| line.replace(&app, ""))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_cold_start_and_a_sleep_are_counted_with_their_phases() {
    let f = Fixture::new(Behaviour::default());
    let object = f.ns.get_by_name("alpha");
    assert_eq!(fetch(&object, "/").await.0, StatusCode::OK);

    assert_eq!(
        lines(&f, "berth_cold_starts_total"),
        ["berth_cold_starts_total{class=\"Fake\"} 1"]
    );
    // The fake engine's create takes 40 ms and its start 120 ms, on paused time.
    let sums = lines(&f, "berth_cold_start_duration_seconds_sum");
    assert!(
        sums.contains(
            &"berth_cold_start_duration_seconds_sum{class=\"Fake\",phase=\"create\"} 0.04"
                .to_string()
        ),
        "{sums:?}"
    );
    assert!(
        sums.contains(
            &"berth_cold_start_duration_seconds_sum{class=\"Fake\",phase=\"start\"} 0.12"
                .to_string()
        ),
        "{sums:?}"
    );
    assert_eq!(
        lines(&f, "berth_instances"),
        ["berth_instances{class=\"Fake\",state=\"healthy\"} 1"]
    );

    sleep(SLEEP_AFTER * 2).await;
    settle().await;
    assert!(f.fake.running().is_empty());
    assert_eq!(
        lines(&f, "berth_sleeps_total"),
        ["berth_sleeps_total{class=\"Fake\"} 1"]
    );
    assert_eq!(
        lines(&f, "berth_container_exits_total"),
        ["berth_container_exits_total{class=\"Fake\",reason=\"slept\"} 1"]
    );
    assert!(
        lines(&f, "berth_instances{").is_empty(),
        "no container runs"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_start_is_counted_by_its_cause() {
    let f = Fixture::with(
        Behaviour::default(),
        |class| class.image = "fake/missing:1".into(),
        Store::in_memory().expect("store"),
    );
    let object = f.ns.get_by_name("alpha");
    assert_ne!(fetch(&object, "/").await.0, StatusCode::OK);
    assert_eq!(
        lines(&f, "berth_failed_starts_total"),
        ["berth_failed_starts_total{class=\"Fake\",cause=\"image-missing\"} 1"]
    );
    assert!(lines(&f, "berth_cold_starts_total").is_empty());
}
