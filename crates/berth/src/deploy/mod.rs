//! `berth deploy`: build the app's images as `berth dev` does, push the ones the
//! registry lacks, and hand the manifest and the images (by digest) to a `berth serve`,
//! which plans the change, records it and rolls it out; then follow the rollout.

mod client;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;

use crate::api::{DeployRequest, DeployResponse, DeploymentView, Info, MAX_PROGRAM_BYTES, PREFIX};
use crate::build::{self, BuildError, Builder, Origin, DEV_PREFIX};
use crate::js::{load_program, program_file, Limits, LoadError};
use crate::manifest::{valid_app_name, ImageSource, Manifest, ManifestError, FILE_NAME};

pub use client::{registry_digest, ControlClient};

/// Why a deploy could not be made, or failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("{file} is outside the app's folder {dir}, and berth deploy ships only the app's folder; move the module into it")]
    OutsideApp { file: PathBuf, dir: PathBuf },
    #[error("cannot read {file}: {reason}")]
    ReadProgram { file: PathBuf, reason: String },
    #[error("the program's files take {bytes} bytes, over the {MAX_PROGRAM_BYTES} berth deploy sends; the largest is {largest}: does the program import data it could read at run time?")]
    ProgramTooLarge { bytes: usize, largest: String },
    #[error("{app:?} is not a valid app name; with --stage, the app is <name>-<stage>: use lowercase letters, digits, '-', '_' or '.'")]
    AppName { app: String },
    #[error("cannot reach the berth server at {url}: {reason}; check --server (or BERTH_SERVER) and that berth serve runs")]
    Server { url: String, reason: String },
    #[error("the berth server at {url} refused the token; pass the one `berth serve --print-token` shows, with --token or BERTH_TOKEN")]
    Unauthorized { url: String },
    #[error("the server refused ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the server runs {server} and this engine builds {local}; build on a {server} machine (berth does not cross-build)")]
    Platform { server: String, local: String },
    #[error("the server has no registry to push {container} to; start berth serve with --registry host:port")]
    NoRegistry { container: String },
    #[error("deployment {number} of {app} failed: {message}")]
    Failed {
        app: String,
        number: i64,
        message: String,
    },
}

/// What to deploy, and where.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// The control API: `http://host:port`.
    pub server: String,
    pub token: String,
    /// Deploy a separate copy of the app, `<name>-<stage>`.
    pub stage: Option<String>,
    pub dry_run: bool,
    pub adopt: bool,
}

/// A deploy request ready to send: the images built and pushed.
pub struct Prepared {
    pub app: String,
    pub client: ControlClient,
    pub request: DeployRequest,
}

/// The app name a manifest deploys as, with its stage.
pub fn app_name(manifest: &Manifest, stage: Option<&str>) -> Result<String, DeployError> {
    let app = match stage {
        Some(stage) => format!("{}-{stage}", manifest.name),
        None => manifest.name.clone(),
    };
    if valid_app_name(&app) {
        Ok(app)
    } else {
        Err(DeployError::AppName { app })
    }
}

/// Builds the images of the app in `dir` and pushes those the server's registry lacks
/// (none on a dry run). `local_platform` is what `builder` builds for.
pub async fn prepare(
    dir: &Path,
    builder: &dyn Builder,
    local_platform: &str,
    options: &DeployOptions,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Prepared, DeployError> {
    let manifest_path = dir.join(FILE_NAME);
    let (manifest, text, program) = if manifest_path.exists() {
        let manifest = Manifest::load_toml(dir)?;
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| ManifestError::Read {
            path: manifest_path.clone(),
            reason: e.to_string(),
        })?;
        (manifest, text, BTreeMap::new())
    } else if program_file(dir).is_some() {
        let program = load_program(dir, Limits::default()).map_err(LoadError::from)?;
        let files = program_files(&program.manifest.dir, &program.files)?;
        (program.manifest, String::new(), files)
    } else {
        return Err(LoadError::NoApp {
            dir: dir.to_path_buf(),
        }
        .into());
    };
    let app = app_name(&manifest, options.stage.as_deref())?;
    let client = ControlClient::new(&options.server, &options.token)?;
    let info: Info = client
        .call(Method::GET, &format!("{PREFIX}/info"), None::<&()>)
        .await?;
    if info.platform != local_platform {
        return Err(DeployError::Platform {
            server: info.platform,
            local: local_platform.to_string(),
        });
    }
    let mut images = BTreeMap::new();
    for def in &manifest.containers {
        let ImageSource::Build(spec) = &def.image else {
            continue;
        };
        let registry = info
            .registry
            .as_deref()
            .ok_or_else(|| DeployError::NoRegistry {
                container: def.id.clone(),
            })?;
        let origin = Origin {
            app: &app,
            manifest: &manifest_path,
        };
        let mut prefixed = |line: &str| progress(&format!("[build {}] {line}", def.id));
        let built = build::build(builder, spec, origin, &mut prefixed).await?;
        let (local_repository, tag) = built
            .image
            .rsplit_once(':')
            .unwrap_or((&built.image, "latest"));
        let repository = local_repository
            .strip_prefix(&format!("{DEV_PREFIX}/"))
            .unwrap_or(local_repository);
        let target = format!("{registry}/{repository}:{tag}");
        // A content-hash tag names one content: found in the registry, it need not be
        // pushed again. A fixed tag says nothing of the content, so it is always pushed
        // (the registry keeps the layers it has, so an unchanged image costs little).
        let known = match spec.tag {
            None => registry_digest(registry, repository, tag).await,
            Some(_) => None,
        };
        let reference = match known {
            Some(digest) => {
                progress(&format!(
                    "[push {}] {target} is in the registry already",
                    def.id
                ));
                format!("{registry}/{repository}@{digest}")
            }
            None if options.dry_run => target,
            None => {
                progress(&format!("[push {}] pushing {target}", def.id));
                let mut prefixed = |line: &str| progress(&format!("[push {}] {line}", def.id));
                builder.push(&built.image, &target, &mut prefixed).await?
            }
        };
        images.insert(def.id.clone(), reference);
    }
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(crate::lease::this_host);
    let source = format!(
        "{machine}:{}",
        std::fs::canonicalize(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .display()
    );
    Ok(Prepared {
        app,
        client,
        request: DeployRequest {
            manifest: text,
            program,
            images,
            source,
            adopt: options.adopt,
            dry_run: options.dry_run,
        },
    })
}

/// The files of a program, by path relative to `dir` (with `/`), as the server writes
/// them back: only the modules the program and its workers loaded, so that nothing else
/// in the folder (`node_modules`, `.env`, build contexts) leaves the machine. No values of
/// the environment go with them: the server runs the program with its own environment,
/// so that secrets are set where the app runs and are never sent or stored with a deploy.
fn program_files(dir: &Path, files: &[PathBuf]) -> Result<BTreeMap<String, String>, DeployError> {
    let mut program = BTreeMap::new();
    let (mut bytes, mut largest) = (0, (0, String::new()));
    for file in files {
        let relative = file
            .strip_prefix(dir)
            .ok()
            .and_then(|r| r.to_str())
            .filter(|r| !r.split('/').any(|part| part == ".."))
            .ok_or_else(|| DeployError::OutsideApp {
                file: file.clone(),
                dir: dir.to_path_buf(),
            })?;
        let text = std::fs::read_to_string(file).map_err(|e| DeployError::ReadProgram {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        bytes += text.len();
        if text.len() > largest.0 {
            largest = (text.len(), relative.to_string());
        }
        program.insert(relative.to_string(), text);
    }
    if bytes > MAX_PROGRAM_BYTES {
        return Err(DeployError::ProgramTooLarge {
            bytes,
            largest: largest.1,
        });
    }
    Ok(program)
}

/// Sends the deploy request.
pub async fn submit(prepared: &Prepared) -> Result<DeployResponse, DeployError> {
    let path = format!("{PREFIX}/apps/{}/deployments", prepared.app);
    prepared
        .client
        .call(Method::POST, &path, Some(&prepared.request))
        .await
}

/// Waits for deployment `number` of `app` to finish rolling out, telling `progress` of
/// each new message; an error if it failed.
pub async fn follow(
    client: &ControlClient,
    app: &str,
    number: i64,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<DeploymentView, DeployError> {
    let path = format!("{PREFIX}/apps/{app}/deployments/{number}");
    let mut last = String::new();
    // Quick at first, when most rollouts end; then gentler on the server.
    let mut pause = Duration::from_millis(20);
    loop {
        let view: DeploymentView = client.call(Method::GET, &path, None::<&()>).await?;
        if view.message != last && !view.message.is_empty() {
            progress(&view.message);
            last = view.message.clone();
        }
        match view.status.as_str() {
            "rolling-out" => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            "failed" => {
                return Err(DeployError::Failed {
                    app: app.to_string(),
                    number,
                    message: view.message,
                })
            }
            _ => return Ok(view),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_ships_its_files_inside_the_folder_and_within_the_cap() {
        let dir = std::env::temp_dir().join(format!("berth-ship-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("src")).expect("dir");
        std::fs::write(dir.join("alchemy.run.ts"), "export {};").expect("write");
        std::fs::write(dir.join("src/w.ts"), "export default {};").expect("write");
        let files = [dir.join("alchemy.run.ts"), dir.join("src/w.ts")];
        let shipped = program_files(&dir, &files).expect("shipped");
        assert_eq!(
            shipped.keys().collect::<Vec<_>>(),
            ["alchemy.run.ts", "src/w.ts"]
        );
        let outside = program_files(&dir, &[PathBuf::from("/etc/hostname")]);
        assert!(matches!(outside, Err(DeployError::OutsideApp { .. })));
        std::fs::write(dir.join("big.ts"), "x".repeat(MAX_PROGRAM_BYTES + 1)).expect("write");
        let big = program_files(&dir, &[dir.join("big.ts")]).expect_err("too large");
        assert!(big.to_string().contains("the largest is big.ts"), "{big}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
