//! `berth.toml`: the app's containers (image, class options, limits) and workers
//! (bindings and routes), mirroring Cloudflare's `alchemy.run.ts` and the container
//! class (`MyContainer`) of a Cloudflare Containers app.
//!
//! Every error names the file, line and column, the key, and what is accepted; unknown
//! keys are errors with the nearest known key suggested.
//!
//! Parsing is two steps: `raw` reads the text as written, with positions, and `lower`
//! checks it and fills in defaults; `diagnose` turns positions into errors.

mod diagnose;
mod lower;
mod raw;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::build::BuildSpec;
use crate::class::ContainerClass;
use crate::router::Route;
use diagnose::Source;

/// The manifest's file name.
pub const FILE_NAME: &str = "berth.toml";

/// A manifest that cannot be used, and where.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {reason}; berth looks for {FILE_NAME} in the folder you give it (default: the current one)")]
    Read { path: PathBuf, reason: String },
    #[error("{path}:{line}:{column}: {key}{message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        /// The dotted key at fault, with a trailing `: `, or empty.
        key: String,
        message: String,
    },
}

/// A parsed and checked manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The app's name: it prefixes images and labels every container.
    pub name: String,
    /// The folder that holds `berth.toml`; relative paths start here.
    pub dir: PathBuf,
    pub containers: Vec<ContainerDef>,
    pub workers: Vec<WorkerDef>,
}

/// A container resource: how to get its image, and its class.
#[derive(Debug, Clone)]
pub struct ContainerDef {
    /// The resource id (the key under `[containers]`).
    pub id: String,
    pub image: ImageSource,
    /// The class options; `image` is filled in once the image is built.
    pub class: ContainerClass,
}

/// Where a container's image comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    Build(BuildSpec),
    /// A prebuilt image, used as is.
    Prebuilt(String),
}

/// A worker: its bindings and its routes.
#[derive(Debug, Clone)]
pub struct WorkerDef {
    pub name: String,
    /// Binding name → container resource id.
    pub bindings: BTreeMap<String, String>,
    pub routes: Vec<Route>,
}

impl Manifest {
    /// Loads `dir/berth.toml`.
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path).map_err(|e| ManifestError::Read {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Manifest::parse(&text, &path)
    }

    /// Parses manifest text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let source = Source { text, path };
        let raw = raw::deserialize(&source)?;
        lower::manifest(&raw, &dir, &source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{KeySource, Strategy, Target};
    use std::time::Duration;

    const SEED: &str = r#"
name = "hello"

[containers.my-container]
class_name = "MyContainer"
name = "your-container"
tag = "some-tag"
build = { context = ".", dockerfile = "Dockerfile.dev", args = { K = "v" }, target = "stage" }
max_instances = 20
instance_type = "lite"

[containers.my-container.class]
default_port = 8080
sleep_after = "3m"
env_vars = { MESSAGE = "I was passed in via the container class!" }

[workers.my-worker]
bindings = { MY_CONTAINER = "my-container" }
routes = [
  { path = "/users/:user/*", binding = "MY_CONTAINER", instance = { from = "path", param = "user" } },
  { path = "/lb/*",          binding = "MY_CONTAINER", instance = { pool = 3, strategy = "round-robin" } },
  { path = "/h/*",           binding = "MY_CONTAINER", instance = { pool = 4, strategy = "hash", key = { from = "header", name = "X-User" } } },
  { path = "/*",             binding = "MY_CONTAINER", instance = "container" },
]
"#;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("app/berth.toml"))
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("an error").to_string()
    }

    #[test]
    fn the_seed_shape_parses() {
        let m = parse(SEED).expect("valid");
        assert_eq!(m.name, "hello");
        let c = &m.containers[0];
        assert_eq!(c.class.name, "MyContainer");
        assert_eq!(c.class.default_port, Some(8080));
        assert_eq!(c.class.sleep_after, Duration::from_secs(180));
        assert_eq!(c.class.instance_type.map(|t| t.memory_mib), Some(256));
        assert!(c.class.init, "an init process by default");
        let ImageSource::Build(b) = &c.image else {
            panic!("a build")
        };
        assert_eq!(b.name, "your-container");
        assert_eq!(b.tag.as_deref(), Some("some-tag"));
        assert_eq!(b.dockerfile, "Dockerfile.dev");
        assert_eq!(b.context, Path::new("app/."));
        let w = &m.workers[0];
        assert_eq!(w.routes.len(), 4);
        assert_eq!(
            w.routes[0].target,
            Target::From(KeySource::Path("user".into()))
        );
        assert_eq!(
            w.routes[1].target,
            Target::Pool {
                size: 3,
                strategy: Strategy::RoundRobin
            }
        );
        assert_eq!(
            w.routes[2].target,
            Target::Pool {
                size: 4,
                strategy: Strategy::Hash(KeySource::Header("x-user".into()))
            }
        );
        assert_eq!(w.routes[3].target, Target::Fixed("container".into()));
    }

    #[test]
    fn pools_have_from_1_to_10000_objects() {
        for size in ["0", "-5", "10001"] {
            let e = error(&SEED.replace("pool = 3,", &format!("pool = {size},")));
            assert!(
                e.contains(&format!(
                    "pool = {size}: a pool has from 1 to 10000 objects"
                )),
                "{e}"
            );
            assert!(e.starts_with("app/berth.toml:"), "{e}");
        }
        let e = error(&SEED.replace("pool = 3,", "pool = 18446744073709551615,"));
        assert!(e.starts_with("app/berth.toml:"), "{e}");
        assert!(parse(&SEED.replace("pool = 3,", "pool = 10000,")).is_ok());
    }

    #[test]
    fn the_init_process_can_be_turned_off() {
        let text = SEED.replace("default_port = 8080", "default_port = 8080\ninit = false");
        let m = parse(&text).expect("valid");
        assert!(!m.containers[0].class.init);
        let e = error(&SEED.replace("default_port = 8080", "default_port = 8080\ninit = \"no\""));
        assert!(e.contains("containers.my-container.class.init"), "{e}");
    }

    #[test]
    fn unknown_keys_name_the_place_and_the_nearest_key() {
        let text = SEED.replace("sleep_after = \"3m\"", "sleep_afte = \"3m\"");
        let e = error(&text);
        assert!(e.starts_with("app/berth.toml:14:1: containers.my-container.class.sleep_afte: unknown key `sleep_afte` (did you mean `sleep_after`?); accepted keys: default_port"), "{e}");
        assert!(e.contains("accepted keys: default_port"), "{e}");
    }

    #[test]
    fn bad_values_say_what_is_accepted() {
        let e = error(&SEED.replace("\"3m\"", "\"3x\""));
        assert!(e.starts_with("app/berth.toml:14:15: containers.my-container.class.sleep_after: invalid duration \"3x\""), "{e}");
        let e = error(&SEED.replace("default_port = 8080", "default_port = 70000"));
        assert!(
            e.contains("containers.my-container.class.default_port: 70000 is not a port"),
            "{e}"
        );
        let e = error(&SEED.replace("\"lite\"", "\"huge\""));
        assert!(
            e.contains("containers.my-container.instance_type: unknown instance type \"huge\""),
            "{e}"
        );
        let e = error(&SEED.replace("\"round-robin\"", "\"fastest\""));
        assert!(
            e.contains("strategy \"fastest\" is not known; use random, round-robin"),
            "{e}"
        );
        let e = error(&SEED.replace("name = \"hello\"", "name = \"Hello World\""));
        assert!(
            e.starts_with("app/berth.toml:2:8: name: \"Hello World\" is not a valid app name"),
            "{e}"
        );
    }

    #[test]
    fn a_binding_to_a_missing_container_is_an_error() {
        let e = error(&SEED.replace(
            "MY_CONTAINER = \"my-container\"",
            "MY_CONTAINER = \"my-containr\"",
        ));
        assert!(e.starts_with("app/berth.toml:18:"), "{e}");
        assert!(e.contains("workers.my-worker.bindings.MY_CONTAINER: binds container \"my-containr\", which is not defined; defined containers: my-container (did you mean `my-container`?)"), "{e}");
    }

    #[test]
    fn routes_are_checked_against_bindings_and_paths() {
        let e = error(&SEED.replace(
            "binding = \"MY_CONTAINER\", instance = \"container\"",
            "binding = \"OTHER\", instance = \"container\"",
        ));
        assert!(
            e.contains("routes[3].binding: \"OTHER\" is not a binding of this worker"),
            "{e}"
        );
        let e = error(&SEED.replace("param = \"user\"", "param = \"id\""));
        assert!(
            e.contains("takes path parameter \"id\", but path /users/:user/* has no :id segment"),
            "{e}"
        );
        let e = error(&SEED.replace("path = \"/lb/*\"", "path = \"lb\""));
        assert!(e.contains("must start with /"), "{e}");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = error("name = \"x\"\n[containers.a\n");
        assert!(e.starts_with("app/berth.toml:2:"), "{e}");
    }

    #[test]
    fn a_missing_name_is_reported() {
        let e = error("[containers.a]\n");
        assert!(e.contains("missing field `name`"), "{e}");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn check(text: &str) {
            match parse(text) {
                Ok(m) => assert!(!m.name.is_empty()),
                Err(ManifestError::Invalid { line, column, .. }) => {
                    assert!(line >= 1 && column >= 1);
                    assert!(
                        line <= text.lines().count().max(1) + 1,
                        "line {line} is in the file"
                    );
                }
                Err(e) => panic!("parse gave a non-positional error: {e}"),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]

            /// Any text gives a manifest or a positioned error, never a panic.
            #[test]
            fn any_text(text in "\\PC{0,400}") {
                check(&text);
            }

            /// Edits of a valid manifest: characters replaced, removed or inserted.
            #[test]
            fn edited_seed(edits in proptest::collection::vec((0usize..2000, 0u8..3, "[ -~\n]"), 1..6)) {
                let mut text: Vec<char> = SEED.chars().collect();
                for (at, kind, c) in edits {
                    let at = at % (text.len() + 1);
                    let c = c.chars().next().unwrap_or('x');
                    match kind {
                        0 if at < text.len() => text[at] = c,
                        1 if at < text.len() => { text.remove(at); }
                        _ => text.insert(at, c),
                    }
                }
                check(&text.into_iter().collect::<String>());
            }
        }
    }
}
