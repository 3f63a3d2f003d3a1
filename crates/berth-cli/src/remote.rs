//! The commands that talk to a `berth serve`: deploy, rollback, destroy.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Context};
use berth::api::{Change, DeployResponse, DestroyReport, PREFIX};
use berth::deploy::{self, ControlClient, DeployOptions};
use berth::manifest::Manifest;
use berth::DockerRuntime;
use http::Method;

use crate::dev::clock;

/// Where the server is, and the token it wants.
#[derive(clap::Args, Clone)]
pub struct Server {
    /// The control API of berth serve: http://HOST:PORT, or unix:PATH on its machine.
    #[arg(long, env = "BERTH_SERVER", default_value = "http://127.0.0.1:7878")]
    pub server: String,
    /// The control API's token (`berth serve --print-token` shows it).
    #[arg(long, env = "BERTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl Server {
    fn token(&self) -> anyhow::Result<String> {
        match &self.token {
            Some(token) if !token.is_empty() => Ok(token.clone()),
            _ => bail!("no token for {}: pass --token or set BERTH_TOKEN (`berth serve --print-token` on the server shows it)", self.server),
        }
    }

    pub(crate) fn client(&self) -> anyhow::Result<ControlClient> {
        Ok(ControlClient::new(&self.server, &self.token()?)?)
    }
}

pub struct DeployArgs {
    pub server: Server,
    pub stage: Option<String>,
    pub dry_run: bool,
    pub yes: bool,
    pub adopt: bool,
    pub json: bool,
}

pub async fn deploy(dir: &Path, args: DeployArgs) -> anyhow::Result<()> {
    let engine = DockerRuntime::connect().await?;
    let platform = engine.platform().await?;
    let options = DeployOptions {
        server: args.server.server.clone(),
        token: args.server.token()?,
        stage: args.stage,
        dry_run: args.dry_run,
        adopt: args.adopt,
    };
    let mut progress = |line: &str| eprintln!("{} {line}", clock());
    // Built and pushed first, so that the plan compares the very images that would run.
    let mut prepared = deploy::prepare(dir, &engine, &platform, &options, &mut progress).await?;
    prepared.request.dry_run = true;
    let plan = deploy::submit(&prepared).await?;
    show_plan(&plan);
    if plan.unchanged {
        return finish(args.json, &plan, "no changes");
    }
    if args.dry_run {
        return finish(args.json, &plan, "dry run: nothing changed");
    }
    let deletes: Vec<String> = plan
        .plan
        .iter()
        .filter(|p| p.change == Change::Delete)
        .map(|p| format!("{} {}", p.kind, p.name))
        .collect();
    if !deletes.is_empty()
        && !args.yes
        && !confirm(&format!(
            "this deploy deletes {} and their containers",
            deletes.join(", ")
        ))?
    {
        bail!("nothing deployed");
    }
    prepared.request.dry_run = false;
    let answer = deploy::submit(&prepared).await?;
    let Some(number) = answer.deployment else {
        return finish(args.json, &answer, "no changes");
    };
    eprintln!(
        "{} deployment {number} of {}: rolling out",
        clock(),
        answer.app
    );
    let view = deploy::follow(&prepared.client, &answer.app, number, &mut progress).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        println!("deployment {number} of {} is {}", answer.app, view.status);
    }
    Ok(())
}

fn show_plan(plan: &DeployResponse) {
    eprintln!("{} plan for {}:", clock(), plan.app);
    for item in &plan.plan {
        let change = serde_json::to_value(item.change)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        eprintln!("  {:<7} {:<24} {change}", item.kind, item.name);
    }
}

fn finish(json: bool, plan: &DeployResponse, text: &str) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(plan)?);
    } else {
        println!("{text}");
    }
    Ok(())
}

/// Asks on the terminal; without one, the answer is no and `--yes` is the way.
fn confirm(what: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("{what}; pass --yes to go ahead");
    }
    eprint!("{what}. Go ahead? [y/N] ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// The app named by `app`, or else by the manifest in `dir` (with its stage).
fn app_of(app: Option<String>, dir: &Path, stage: Option<&str>) -> anyhow::Result<String> {
    match app {
        Some(app) => Ok(app),
        None => {
            let manifest = Manifest::load(dir)
                .context("naming the app: give --app, or run in the app's folder")?;
            Ok(deploy::app_name(&manifest, stage)?)
        }
    }
}

pub async fn rollback(
    app: Option<String>,
    dir: &Path,
    stage: Option<String>,
    server: Server,
    json: bool,
) -> anyhow::Result<()> {
    let app = app_of(app, dir, stage.as_deref())?;
    let client = server.client()?;
    let answer: DeployResponse = client
        .call(
            Method::POST,
            &format!("{PREFIX}/apps/{app}/rollback"),
            None::<&()>,
        )
        .await?;
    let Some(number) = answer.deployment else {
        return finish(
            json,
            &answer,
            "no changes: the app already runs that deployment",
        );
    };
    eprintln!("{} deployment {number} of {app}: rolling back", clock());
    let mut progress = |line: &str| eprintln!("{} {line}", clock());
    let view = deploy::follow(&client, &app, number, &mut progress).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        println!(
            "deployment {number} of {app} is {} ({})",
            view.status, view.message
        );
    }
    Ok(())
}

pub async fn destroy(
    app: Option<String>,
    dir: &Path,
    stage: Option<String>,
    server: Server,
    yes: bool,
    json: bool,
) -> anyhow::Result<()> {
    let app = app_of(app, dir, stage.as_deref())?;
    let client = server.client()?;
    if !yes
        && !confirm(&format!(
            "this removes app {app} from {}: its containers, records, storage and deployments",
            server.server
        ))?
    {
        bail!("nothing removed");
    }
    let report: DestroyReport = client
        .call(Method::DELETE, &format!("{PREFIX}/apps/{app}"), None::<&()>)
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "removed app {app}: {} container(s), {} volume(s), {} object record(s), {} deployment(s)",
        report.containers, report.volumes, report.objects, report.deployments
    );
    if !report.images_left.is_empty() {
        println!("left in the registry (remove them there if you no longer need them):");
        for image in &report.images_left {
            println!("  {image}");
        }
    }
    Ok(())
}
