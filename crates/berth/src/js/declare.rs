//! What the program declared (as the built-in modules record it) to berth's
//! [`Manifest`]: the app's name, each `Container` with its image and class, each `Worker`.
//!
//! alchemy takes many props berth has no use for (`adopt`, `observability`, …); they are
//! logged as ignored rather than refused, so that a project runs unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::engine::Engine;
use super::{class_options, workers, ScriptError, SourcePlace};
use crate::build::BuildSpec;
use crate::class::InstanceType;
use crate::manifest::{
    valid_app_name, valid_image_tag, ContainerDef, ImageSource, Manifest, Place, Rollout,
};

#[derive(Deserialize)]
struct Declared {
    app: Option<App>,
    containers: Vec<Declaration>,
    workers: Vec<Declaration>,
}

#[derive(Deserialize)]
struct App {
    name: String,
    site: String,
}

/// One `Container(id, props)` or `Worker(id, props)` call.
#[derive(Deserialize)]
pub(super) struct Declaration {
    pub id: String,
    /// The stack at the call.
    pub site: String,
    pub props: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerProps {
    class_name: Option<String>,
    name: Option<String>,
    tag: Option<String>,
    build: Option<BuildProps>,
    image: Option<Value>,
    max_instances: Option<usize>,
    /// berth's own: spares kept started and ready for new names.
    standby: Option<usize>,
    /// A named size (`"basic"`), or Wrangler's custom `{ vcpu, memory_mib, disk_mb }`.
    instance_type: Option<Value>,
    /// `dev.remote` pushes the image to Cloudflare in alchemy's dev mode; berth always runs
    /// the image where it builds it, so it has no meaning here.
    #[serde(rename = "dev")]
    _dev: Option<Value>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Deserialize, Default)]
struct BuildProps {
    context: Option<String>,
    dockerfile: Option<String>,
    #[serde(default)]
    args: BTreeMap<String, String>,
    target: Option<String>,
}

/// An `Image` from `alchemy/docker`, as its `toJSON` describes it.
#[derive(Deserialize)]
struct ImageProps {
    name: String,
    tag: Option<String>,
    #[serde(default)]
    build: BuildProps,
}

/// The app `json` (what the program declared) describes, in `dir`.
pub(super) fn manifest(engine: &Engine, dir: &Path, json: String) -> Result<Manifest, ScriptError> {
    let declared: Declared = serde_json::from_str(&json).map_err(|e| ScriptError::Engine {
        path: dir.join(super::SCRIPT_FILE_NAME),
        reason: format!("what the program declared cannot be read: {e}"),
    })?;
    let name = match &declared.app {
        Some(app) if valid_app_name(&app.name) => app.name.clone(),
        Some(app) => return Err(ScriptError::Invalid {
            at: engine.place(&app.site),
            resource: format!("alchemy({:?})", app.name),
            message: "not a valid app name; use lowercase letters, digits, '-', '_' or '.', starting with a letter or digit, at most 64".into(),
        }),
        None => app_name_from_folder(dir),
    };
    let mut containers: Vec<(ContainerDef, SourcePlace)> = Vec::new();
    for declaration in &declared.containers {
        let (def, at) = container(engine, dir, declaration)?;
        if let Some((other, _)) = containers
            .iter()
            .find(|(c, _)| c.id == def.id || c.class.name == def.class.name)
        {
            let what = if other.id == def.id {
                format!("the id {:?}", def.id)
            } else {
                format!("class {}", def.class.name)
            };
            return Err(invalid(at, "Container", &def.id, format!("{what} is already used by Container({:?}); give each container its own id and className", other.id)));
        }
        containers.push((def, at));
    }
    let workers = declared
        .workers
        .iter()
        .map(|w| workers::worker(engine, dir, w, &containers))
        .collect::<Result<Vec<_>, _>>()?;
    for (def, at) in &mut containers {
        // The class comes from a worker that binds the container, else from any worker.
        let mut searched: Vec<PathBuf> = Vec::new();
        let binding = workers
            .iter()
            .filter(|w| w.bindings.values().any(|id| *id == def.id));
        for worker in binding.chain(&workers) {
            let Some(script) = &worker.script else {
                continue;
            };
            if searched.contains(&script.entrypoint) {
                continue;
            }
            searched.push(script.entrypoint.clone());
            let options =
                engine.class_options(&script.entrypoint, &def.class.name, &script.vars)?;
            if let Some(json) = options {
                let mut class =
                    class_options::container_class(&json, &def.class.name, &script.entrypoint)?;
                class.max_instances = def.class.max_instances;
                class.standby = def.class.standby;
                class.instance_type = def.class.instance_type;
                if let Some(why) = crate::class::standby_conflict(&class) {
                    return Err(invalid(
                        at.clone(),
                        "Container",
                        &def.id,
                        format!("standby: {why}"),
                    ));
                }
                def.class = class;
                def.exported_by = Some(script.entrypoint.clone());
                searched.clear();
                break;
            }
        }
        if !searched.is_empty() || workers.is_empty() {
            return Err(ScriptError::NoClass {
                at: at.clone(),
                container: def.id.clone(),
                class: def.class.name.clone(),
                searched,
            });
        }
    }
    Ok(Manifest {
        name,
        dir: dir.to_path_buf(),
        containers: containers.into_iter().map(|(def, _)| def).collect(),
        workers,
    })
}

/// One container, its class options still the defaults but for the resource's own.
fn container(
    engine: &Engine,
    dir: &Path,
    d: &Declaration,
) -> Result<(ContainerDef, SourcePlace), ScriptError> {
    let at = engine.place(&d.site);
    let props: ContainerProps = props(&at, "Container", d)?;
    for key in props.other.keys() {
        tracing::warn!("{at}: berth ignores Container({:?}) prop {key}", d.id);
    }
    let fail = |message: String| invalid(at.clone(), "Container", &d.id, message);
    let class_name = props.class_name.clone().ok_or_else(|| fail("className is missing; give the name of the class that extends Container, as in className: \"MyContainer\"".into()))?;
    let (image, key) = match (props.image, props.build) {
        (Some(_), Some(_)) => return Err(fail("give either image or build, not both".into())),
        (Some(Value::String(image)), None) => (ImageSource::Prebuilt(image), "image"),
        (Some(image), None) => (image_resource(dir, image).map_err(fail)?, "image"),
        (None, build) => {
            let spec = build_spec(
                dir,
                props.name.unwrap_or_else(|| d.id.clone()),
                props.tag,
                build.unwrap_or_default(),
            );
            (ImageSource::Build(spec.map_err(fail)?), "build")
        }
    };
    let mut class = crate::class::ContainerClass::new(class_name, String::new());
    if let Some(max) = props.max_instances {
        class.max_instances = max;
    }
    if let Some(standby) = props.standby {
        class.standby = standby;
        if let Some(why) = crate::class::standby_conflict(&class) {
            return Err(fail(format!("standby: {why}")));
        }
    }
    if let Some(kind) = &props.instance_type {
        class.instance_type =
            Some(instance_type(kind).map_err(|e| fail(format!("instanceType: {e}")))?);
    }
    let image_place = Place {
        path: at.path.clone(),
        line: at.line as usize,
        column: at.column as usize,
        key: format!("Container({:?}).{key}", d.id),
    };
    let def = ContainerDef {
        id: d.id.clone(),
        image,
        image_place,
        class,
        rollout: Rollout::default(),
        exported_by: None,
    };
    Ok((def, at))
}

/// A named instance type, or a custom one as Wrangler takes it: `vcpu` (default 1/16)
/// and `memory_mib` (default 256); `disk_mb` is the platform's, not berth's.
fn instance_type(value: &Value) -> Result<InstanceType, String> {
    let custom = match value {
        Value::String(name) => return InstanceType::named(name).map_err(|e| e.to_string()),
        Value::Object(custom) => custom,
        other => {
            return Err(format!(
                "{other} is neither a named type (\"basic\") nor {{ vcpu, memory_mib }}"
            ))
        }
    };
    let vcpu = match custom.get("vcpu") {
        None => 1.0 / 16.0,
        Some(v) => v
            .as_f64()
            .filter(|v| *v > 0.0 && *v <= 256.0)
            .ok_or("vcpu is a number above 0, at most 256")?,
    };
    let memory_mib = match custom.get("memory_mib") {
        None => 256,
        Some(v) => v
            .as_u64()
            .filter(|m| *m >= 6)
            .ok_or("memory_mib is a whole number of MiB, at least 6")?,
    };
    Ok(InstanceType { vcpu, memory_mib })
}

/// An `Image` or `RemoteImage` resource given as `image`.
fn image_resource(dir: &Path, image: Value) -> Result<ImageSource, String> {
    match image.get("$resource").and_then(Value::as_str) {
        Some("remote-image") => match image.get("ref").and_then(Value::as_str) {
            Some(reference) => Ok(ImageSource::Prebuilt(reference.to_string())),
            None => Err("image: the RemoteImage has no name".into()),
        },
        Some("image") => {
            let props: ImageProps = serde_path_to_error::deserialize(image).map_err(|e| format!("image.{}: {}", e.path(), e.inner()))?;
            Ok(ImageSource::Build(build_spec(dir, props.name, props.tag, props.build)?))
        }
        _ => Err(format!("image is {image}; give an image name (\"nginx:1.27\"), an Image or a RemoteImage from \"alchemy/docker\", or leave it out to build ./Dockerfile")),
    }
}

fn build_spec(
    dir: &Path,
    name: String,
    tag: Option<String>,
    build: BuildProps,
) -> Result<BuildSpec, String> {
    if !valid_app_name(&name) {
        return Err(format!(
            "{name:?} is not a valid image name; use lowercase letters, digits, '-', '_' or '.'"
        ));
    }
    if let Some(tag) = tag.as_deref().filter(|t| !valid_image_tag(t)) {
        return Err(format!("{tag:?} is not a valid tag; use up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"));
    }
    Ok(BuildSpec {
        name,
        tag,
        context: dir.join(build.context.as_deref().unwrap_or(".")),
        dockerfile: build.dockerfile.unwrap_or_else(|| "Dockerfile".into()),
        args: build.args,
        target: build.target,
        command: None,
    })
}

/// The props of `d`, typed, or an error naming the prop at fault.
pub(super) fn props<T: DeserializeOwned>(
    at: &SourcePlace,
    kind: &str,
    d: &Declaration,
) -> Result<T, ScriptError> {
    serde_path_to_error::deserialize(d.props.clone()).map_err(|e| {
        invalid(
            at.clone(),
            kind,
            &d.id,
            format!("{}: {}", e.path(), e.inner()),
        )
    })
}

pub(super) fn invalid(at: SourcePlace, kind: &str, id: &str, message: String) -> ScriptError {
    ScriptError::Invalid {
        at,
        resource: format!("{kind}({id:?})"),
        message,
    }
}

/// The app name of a program that never calls `alchemy(name)`: the folder's name,
/// lowercased, each run of characters other than letters, digits, '-', '_' and '.'
/// replaced by one '-', without leading or trailing punctuation, at most 64 bytes; `app`
/// if nothing is left.
pub fn app_name_from_folder(dir: &Path) -> String {
    let folder = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut name = String::new();
    for c in folder.chars() {
        let keep = c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.');
        match keep {
            true => name.push(c),
            false if !name.ends_with('-') => name.push('-'),
            false => {}
        }
    }
    let punctuation = |c: char| matches!(c, '-' | '_' | '.');
    let mut name = name.trim_matches(punctuation).to_string();
    name.truncate(64);
    let name = name.trim_end_matches(punctuation).to_string();
    if name.is_empty() {
        "app".to_string()
    } else {
        name
    }
}
