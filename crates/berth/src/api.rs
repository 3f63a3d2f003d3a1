//! The JSON of the control API of `berth serve` (version 1), shared by the server and by
//! `berth deploy`, so that the two cannot drift apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The API's version prefix.
pub const PREFIX: &str = "/v1";

/// The most a deploy's program files may hold in all: half the control API's limit on
/// a request's body (JSON escapes some characters), and room for the packages of
/// `node_modules` a worker imports beside its own code.
pub const MAX_PROGRAM_BYTES: usize = 8 * 1024 * 1024;

/// `GET /v1/info`: what a client needs to know before it deploys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// berth's version.
    pub version: String,
    /// `host:port` of the registry to push images to; `None`: images must already be
    /// in the server's engine.
    pub registry: Option<String>,
    /// The engine's platform (`linux/amd64`), which images must be built for.
    pub platform: String,
    /// On a cluster (`--engine swarm`): the routers this one sees on the overlay, itself
    /// included. Every router computes objects' homes from this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routers: Vec<String>,
}

/// `POST /v1/apps/{app}/deployments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRequest {
    /// The `berth.toml` text; empty for an app of `alchemy.run.ts`.
    pub manifest: String,
    /// An app of `alchemy.run.ts`: its code, path relative to the app's folder → text.
    /// The server runs the program again (from these files, with its own environment),
    /// as it parses `berth.toml` again: it never trusts what the client read from it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub program: BTreeMap<String, String>,
    /// Container resource id → image reference, by digest for built images.
    pub images: BTreeMap<String, String>,
    /// Where the deploy comes from (`<machine>:<folder>`).
    pub source: String,
    /// Take over an app deployed from another source.
    #[serde(default)]
    pub adopt: bool,
    /// Only answer with the plan.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a deployment does to one container class or worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    Create,
    /// Options changed: running instances are rolled out.
    Update,
    /// The image changed: running instances are rolled out.
    Replace,
    Delete,
    Unchanged,
}

/// One line of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanItem {
    /// `class` or `worker`.
    pub kind: String,
    pub name: String,
    pub change: Change,
}

/// The answer to a deploy request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployResponse {
    pub app: String,
    pub plan: Vec<PlanItem>,
    /// The deployment made; `None` for a dry run or when nothing changed.
    pub deployment: Option<i64>,
    /// Nothing differs from what the app runs.
    pub unchanged: bool,
}

/// A deployment, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentView {
    pub app: String,
    pub number: i64,
    /// `rolling-out`, `active`, `superseded` or `failed`.
    pub status: String,
    /// The rollout's progress, or why it failed.
    pub message: String,
    pub images: BTreeMap<String, String>,
    pub source: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// An app, as `GET /v1/apps` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppView {
    pub name: String,
    /// The deployment it runs.
    pub deployment: DeploymentView,
    /// Worker name → the hosts it answers.
    pub hosts: BTreeMap<String, Vec<String>>,
    pub classes: Vec<String>,
    /// The rollout under way, if the deployment the app runs is still rolling out.
    #[serde(default)]
    pub rollout: Option<RolloutView>,
}

/// A rollout under way: the deployment it brings in, and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutView {
    /// The deployment being rolled out.
    pub deployment: i64,
    /// The deployment it replaces, if the app ran one.
    pub replacing: Option<i64>,
    /// Its last step, as `<class>: <n> of <m> running instances replaced`.
    pub message: String,
    pub started_at_ms: i64,
}

/// One object of an app, with its container if it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    pub class: String,
    pub name: Option<String>,
    pub id: String,
    pub state: String,
    pub exit_code: Option<i64>,
    pub uptime_seconds: Option<u64>,
    /// Requests in flight, for an object live in the server.
    pub in_flight: u32,
    pub container_id: Option<String>,
    /// The image its container runs (by digest); for an object with no container in
    /// this server, the image its next start would run.
    pub image: String,
    /// How long the phases of its last start in this server took; `None` if it made
    /// none (a container adopted from an earlier server's run was not timed).
    #[serde(default)]
    pub last_start: Option<StartTimingsView>,
}

/// The phases of a container's start, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartTimingsView {
    /// The engine's create.
    pub create_ms: u64,
    /// The engine's start.
    pub start_ms: u64,
    /// From the engine's start until the container's ports answered; `None` until they
    /// did.
    pub ready_ms: Option<u64>,
}

/// What `DELETE /v1/apps/{app}` removed, and what it left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestroyReport {
    pub app: String,
    pub containers: usize,
    /// The objects' volumes (`volumes = [...]` of a class), removed.
    #[serde(default)]
    pub volumes: usize,
    pub objects: usize,
    pub deployments: usize,
    /// Images the app's deployments pushed, which stay in the registry.
    pub images_left: Vec<String>,
}

/// An error answer: what went wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable, machine-readable kind (`not-found`, `invalid-manifest`, …).
    pub error: String,
    pub message: String,
}
