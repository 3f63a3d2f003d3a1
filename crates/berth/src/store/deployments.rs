//! The deployments `berth serve` keeps: what each app runs, and what it ran before, so
//! that a restart brings the same apps back and a rollback has something to return to.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{now_ms, Store, StoreError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deployments (
    app TEXT NOT NULL,
    number INTEGER NOT NULL,
    manifest TEXT NOT NULL,
    images TEXT NOT NULL,
    source TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (app, number)
);
";

/// Adds the column of programs (apps of `alchemy.run.ts`) to a store made before them.
pub(super) fn migrate(c: &rusqlite::Connection) -> rusqlite::Result<()> {
    let has: i64 = c.query_row(
        "SELECT count(*) FROM pragma_table_info('deployments') WHERE name = 'program'",
        [],
        |row| row.get(0),
    )?;
    if has == 0 {
        c.execute_batch("ALTER TABLE deployments ADD COLUMN program TEXT NOT NULL DEFAULT '{}'")?;
    }
    Ok(())
}

/// Where a deployment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeploymentStatus {
    /// Its rollout is under way.
    RollingOut,
    /// What the app runs now.
    Active,
    /// A newer deployment took its place.
    Superseded,
    /// Its rollout halted; the app went back to the deployment before it.
    Failed,
}

impl DeploymentStatus {
    /// The status as it is stored and as the control API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::RollingOut => "rolling-out",
            DeploymentStatus::Active => "active",
            DeploymentStatus::Superseded => "superseded",
            DeploymentStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> DeploymentStatus {
        match text {
            "rolling-out" => DeploymentStatus::RollingOut,
            "active" => DeploymentStatus::Active,
            "superseded" => DeploymentStatus::Superseded,
            _ => DeploymentStatus::Failed,
        }
    }
}

/// One deployment of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub app: String,
    /// 1 for an app's first deployment, then counting up.
    pub number: i64,
    /// The `berth.toml` text it was made from; empty for an app of `alchemy.run.ts`.
    pub manifest: String,
    /// The files of an app of `alchemy.run.ts` (path → text), kept so that a restarted
    /// server runs the same program again.
    pub program: BTreeMap<String, String>,
    /// Container resource id → the image reference it runs (by digest).
    pub images: BTreeMap<String, String>,
    /// Where it was deployed from (`<machine>:<folder>`), so that another source folder
    /// cannot take the app over unawares.
    pub source: String,
    /// A digest of what it runs: two deployments with the same fingerprint are the same.
    pub fingerprint: String,
    pub status: DeploymentStatus,
    /// The rollout's progress, or why it failed.
    pub message: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Store {
    /// Records `deployment` under the next number of its app, and returns that number.
    pub async fn add_deployment(&self, deployment: Deployment) -> Result<i64, StoreError> {
        self.run(move |c| {
            let number: i64 = c.query_row(
                "SELECT coalesce(max(number), 0) + 1 FROM deployments WHERE app = ?1",
                params![deployment.app],
                |row| row.get(0),
            )?;
            let images = serde_json::to_string(&deployment.images).unwrap_or_default();
            let program = serde_json::to_string(&deployment.program).unwrap_or_default();
            c.execute(
                "INSERT INTO deployments (app, number, manifest, images, source, fingerprint, status, message, created_at_ms, updated_at_ms, program)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)",
                params![
                    deployment.app,
                    number,
                    deployment.manifest,
                    images,
                    deployment.source,
                    deployment.fingerprint,
                    deployment.status.as_str(),
                    deployment.message,
                    now_ms(),
                    program,
                ],
            )?;
            Ok(number)
        })
        .await
    }

    /// Sets the status and message of deployment `number` of `app`.
    pub async fn set_deployment_status(
        &self,
        app: &str,
        number: i64,
        status: DeploymentStatus,
        message: &str,
    ) -> Result<(), StoreError> {
        let (app, message) = (app.to_string(), message.to_string());
        self.run(move |c| {
            c.execute(
                "UPDATE deployments SET status = ?3, message = ?4, updated_at_ms = ?5
                 WHERE app = ?1 AND number = ?2",
                params![app, number, status.as_str(), message, now_ms()],
            )
            .map(drop)
        })
        .await
    }

    /// The deployments of `app`, newest first.
    pub async fn deployments(&self, app: &str) -> Result<Vec<Deployment>, StoreError> {
        let app = app.to_string();
        self.run(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM deployments WHERE app = ?1 ORDER BY number DESC"
            ))?;
            let rows = stmt.query_map(params![app], row_to_deployment)?;
            rows.collect()
        })
        .await
    }

    /// Deployment `number` of `app`.
    pub async fn deployment(
        &self,
        app: &str,
        number: i64,
    ) -> Result<Option<Deployment>, StoreError> {
        let app = app.to_string();
        self.run(move |c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM deployments WHERE app = ?1 AND number = ?2"),
                params![app, number],
                row_to_deployment,
            )
            .optional()
        })
        .await
    }

    /// The deployment each app runs: its newest active or rolling-out one.
    pub async fn live_deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        self.run(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM deployments d
                 WHERE status IN ('active', 'rolling-out') AND number = (
                   SELECT max(number) FROM deployments
                   WHERE app = d.app AND status IN ('active', 'rolling-out'))
                 ORDER BY app"
            ))?;
            let rows = stmt.query_map([], row_to_deployment)?;
            rows.collect()
        })
        .await
    }

    /// Forgets every deployment of `app`. Returns how many.
    pub async fn forget_deployments(&self, app: &str) -> Result<usize, StoreError> {
        let app = app.to_string();
        self.run(move |c| c.execute("DELETE FROM deployments WHERE app = ?1", params![app]))
            .await
    }
}

const COLUMNS: &str = "app, number, manifest, images, source, fingerprint, status, message, created_at_ms, updated_at_ms, program";

fn row_to_deployment(row: &rusqlite::Row<'_>) -> rusqlite::Result<Deployment> {
    let images: String = row.get(3)?;
    let status: String = row.get(6)?;
    let program: String = row.get(10)?;
    Ok(Deployment {
        app: row.get(0)?,
        number: row.get(1)?,
        manifest: row.get(2)?,
        program: serde_json::from_str(&program).unwrap_or_default(),
        images: serde_json::from_str(&images).unwrap_or_default(),
        source: row.get(4)?,
        fingerprint: row.get(5)?,
        status: DeploymentStatus::parse(&status),
        message: row.get(7)?,
        created_at_ms: row.get(8)?,
        updated_at_ms: row.get(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(app: &str, fingerprint: &str) -> Deployment {
        Deployment {
            app: app.into(),
            number: 0,
            manifest: "name = \"x\"".into(),
            program: BTreeMap::new(),
            images: BTreeMap::from([("web".into(), "r/web@sha256:00".into())]),
            source: "host:/src".into(),
            fingerprint: fingerprint.into(),
            status: DeploymentStatus::Active,
            message: String::new(),
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    #[tokio::test]
    async fn deployments_count_up_per_app_and_the_newest_live_one_is_the_apps() {
        let store = Store::in_memory().expect("store");
        assert_eq!(
            store
                .add_deployment(deployment("a", "1"))
                .await
                .expect("add"),
            1
        );
        assert_eq!(
            store
                .add_deployment(deployment("a", "2"))
                .await
                .expect("add"),
            2
        );
        assert_eq!(
            store
                .add_deployment(deployment("b", "3"))
                .await
                .expect("add"),
            1
        );
        store
            .set_deployment_status("a", 2, DeploymentStatus::Failed, "exited with code 1")
            .await
            .expect("status");
        let live = store.live_deployments().await.expect("live");
        let live: Vec<(&str, i64)> = live.iter().map(|d| (d.app.as_str(), d.number)).collect();
        assert_eq!(live, [("a", 1), ("b", 1)]);
        let history = store.deployments("a").await.expect("history");
        assert_eq!(history[0].message, "exited with code 1");
        assert_eq!(history[1].images["web"], "r/web@sha256:00");
        assert_eq!(store.forget_deployments("a").await.expect("forget"), 2);
        assert!(store.deployment("a", 1).await.expect("get").is_none());
    }
}
