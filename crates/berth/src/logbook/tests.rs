use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::class::DEFAULT_LOG_MAX;

fn line(secs: u64, name: Option<&str>, text: &str) -> Stored {
    Stored {
        time: UNIX_EPOCH + Duration::from_secs(secs),
        name: name.map(str::to_string),
        instance: "0123456789ab".into(),
        stream: Stream::Stdout,
        line: text.into(),
    }
}

fn texts(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.line.as_str()).collect()
}

fn query(app: &str) -> Query {
    Query {
        app: app.into(),
        ..Query::default()
    }
}

#[test]
fn lines_are_read_back_with_their_object_and_in_time_order() {
    let dir = tempdir("order");
    let book = Logbook::new(&dir);
    let mut a = book.object("shop", "Cart", "aaaa1111", DEFAULT_LOG_MAX);
    let mut b = book.object("shop", "Cart", "bbbb2222", DEFAULT_LOG_MAX);
    a.append(&[line(1, Some("alice"), "a1"), line(3, Some("alice"), "a3")])
        .unwrap();
    b.append(&[line(2, None, "b2")]).unwrap();
    let all = book.read(&query("shop")).unwrap();
    assert_eq!(texts(&all), ["a1", "b2", "a3"]);
    assert_eq!(all[0].object, "\"alice\"");
    assert_eq!(all[1].object, "bbbb2222");
    assert_eq!(
        (all[0].class.as_str(), all[0].app.as_str()),
        ("Cart", "shop")
    );

    let alice = Query {
        object: Some("alice".into()),
        ..query("shop")
    };
    assert_eq!(texts(&book.read(&alice).unwrap()), ["a1", "a3"]);
    let by_id = Query {
        object: Some("BBBB".into()),
        ..query("shop")
    };
    assert_eq!(texts(&book.read(&by_id).unwrap()), ["b2"]);
    let recent = Query {
        since: Some(UNIX_EPOCH + Duration::from_secs(2)),
        tail: Some(1),
        ..query("shop")
    };
    assert_eq!(texts(&book.read(&recent).unwrap()), ["a3"]);
    assert!(book.read(&query("other")).unwrap().is_empty());
    book.forget_object("shop", "Cart", "aaaa1111").unwrap();
    assert_eq!(texts(&book.read(&query("shop")).unwrap()), ["b2"]);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn an_objects_file_stays_within_log_max_and_keeps_the_newest_lines() {
    let dir = tempdir("ring");
    let book = Logbook::new(&dir);
    let mut log = book.object("shop", "Cart", "aaaa", MIN_LOG_MAX);
    let written: Vec<Stored> = (0..5000)
        .map(|n| line(n, None, &format!("line {n:05} {}", "x".repeat(40))))
        .collect();
    for chunk in written.chunks(100) {
        log.append(chunk).unwrap();
    }
    let class = dir.join("shop").join("Cart");
    let size = |name: &str| fs::metadata(class.join(name)).map(|m| m.len()).unwrap_or(0);
    assert!(size("aaaa.log") + size("aaaa.log.1") <= MIN_LOG_MAX);
    let kept = book.read(&query("shop")).unwrap();
    assert_eq!(
        kept.last().map(|e| e.line.starts_with("line 04999")),
        Some(true)
    );
    // The lines kept are the newest, without a gap.
    let first: u64 = kept[0].line[5..10].parse().unwrap();
    assert_eq!(kept.len() as u64, 5000 - first);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn a_line_longer_than_a_quarter_of_log_max_is_cut() {
    let dir = tempdir("long");
    let book = Logbook::new(&dir);
    let mut log = book.object("shop", "Cart", "aaaa", MIN_LOG_MAX);
    log.append(&[line(1, None, &"é".repeat(100_000))]).unwrap();
    let kept = book.read(&query("shop")).unwrap();
    assert!(kept[0].line.len() < (MIN_LOG_MAX / 4) as usize + 100);
    assert!(kept[0]
        .line
        .ends_with("[cut by berth: line longer than log_max/4]"));
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn names_cannot_leave_their_folder() {
    assert_eq!(segment("../etc"), "%2E.%2Fetc");
    assert_eq!(segment("My.Class-1_x"), "My.Class-1_x");
    assert_eq!(segment(""), "%");
    for name in ["../etc", "a b/c", "", "é", ".hidden"] {
        assert_eq!(unsegment(&segment(name)), name);
    }
}

#[tokio::test]
async fn a_follower_sees_the_tail_then_new_lines_across_a_turn_over() {
    let dir = tempdir("follow");
    let book = Logbook::new(&dir);
    let mut log = book.object("shop", "Cart", "aaaa", MIN_LOG_MAX);
    log.append(&[line(1, None, "old 1"), line(2, None, "old 2")])
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let following = Query {
        tail: Some(1),
        ..query("shop")
    };
    let task = tokio::spawn(follow(book.clone(), following, tx));
    assert_eq!(rx.recv().await.map(|e| e.line), Some("old 2".into()));
    // 300 lines of about 150 bytes turn a 32 KiB half over twice; the follower keeps
    // up between batches, and sees every line once, in order.
    let mut seen = Vec::new();
    for batch in 0..3u64 {
        let lines: Vec<Stored> = (batch * 100..batch * 100 + 100)
            .map(|n| line(10 + n, None, &format!("new {n:03} {}", "y".repeat(100))))
            .collect();
        log.append(&lines).unwrap();
        while seen.len() < (batch as usize + 1) * 100 {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(e)) => seen.push(e.line[4..7].to_string()),
                _ => panic!("the follower stopped after {} lines", seen.len()),
            }
        }
    }
    let expected: Vec<String> = (0..300).map(|n| format!("{n:03}")).collect();
    assert_eq!(seen, expected);
    assert!(
        dir.join("shop/Cart/aaaa.log.1").exists(),
        "the file turned over"
    );
    drop(rx);
    let _ = task.await;
    let _ = fs::remove_dir_all(dir);
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "berth-logbook-{name}-{}-{:?}",
        std::process::id(),
        SystemTime::now()
    ));
    let _ = fs::remove_dir_all(&dir);
    dir
}
