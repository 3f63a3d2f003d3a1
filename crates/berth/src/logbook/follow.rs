//! Following the logbook as it grows, from this process or from another.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use super::read::{last, Cursor};
use super::{Entry, Logbook, LogbookError, Query};

/// How often the files are looked at for new lines.
const POLL: Duration = Duration::from_millis(200);

/// Sends what `query` selects to `lines`: first the lines already kept (the last `tail`
/// of them), then each new line as it is written, until the receiver is dropped. Objects
/// that first write after the start are followed too.
pub async fn follow(
    book: Logbook,
    query: Query,
    lines: mpsc::Sender<Entry>,
) -> Result<(), LogbookError> {
    let mut cursors: HashMap<PathBuf, Cursor> = HashMap::new();
    let mut first = true;
    loop {
        let (book_, query_) = (book.clone(), query.clone());
        let scanned = tokio::task::spawn_blocking(move || {
            let found = scan(&book_, &query_, &mut cursors);
            (found, cursors)
        })
        .await;
        let Ok((found, kept)) = scanned else {
            return Ok(());
        };
        cursors = kept;
        let tail = if first { query.tail } else { None };
        first = false;
        for entry in last(found?, tail) {
            if lines.send(entry).await.is_err() {
                return Ok(());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = lines.closed() => return Ok(()),
        }
    }
}

/// The lines written since the last scan, in every file the query selects. Blocks.
fn scan(
    book: &Logbook,
    query: &Query,
    cursors: &mut HashMap<PathBuf, Cursor>,
) -> Result<Vec<Entry>, LogbookError> {
    let mut entries = Vec::new();
    for file in book.files(query)? {
        let cursor = cursors.get(&file.path).copied();
        let (stored, next) = file.read_from(cursor)?;
        if let Some(next) = next {
            cursors.insert(file.path.clone(), next);
        }
        entries.extend(
            stored
                .into_iter()
                .filter(|s| query.selects(&file.id, s))
                .map(|s| file.entry(&query.app, s)),
        );
    }
    Ok(entries)
}
