//! An app's workers made from its definitions, the same for `berth dev` and `berth serve`:
//! a worker of `berth.toml` is a [`Router`], one of `alchemy.run.ts` a [`JsWorker`], and
//! each container class with code has its hooks run in one JS worker.
//!
//! A class's hooks run in the worker whose entrypoint exports the class, since that is
//! where its code is; the worker must bind the class, since `ctx.storage` reaches the
//! object through that binding. A class that no such worker exports runs its hooks in the
//! first JS worker that binds it, as before the class was looked up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::{JsHooks, JsWorker, ScriptError, WorkerLimits};
use crate::manifest::WorkerDef;
use crate::namespace::Namespace;
use crate::router::{Delivery, Planned, Router, RouterError, Running};
use crate::worker::{Binding, Env, Worker};

/// Why an app's workers could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WorkersError {
    #[error(transparent)]
    Router(#[from] RouterError),
    /// A JS worker's entrypoint could not be loaded.
    #[error(transparent)]
    Script(#[from] ScriptError),
}

/// A container class as the workers bind it.
pub struct BoundClass {
    pub namespace: Namespace,
    pub hooks: Arc<JsHooks>,
    /// The entrypoint that exports the class, if it has code.
    pub exported_by: Option<PathBuf>,
}

/// A worker ready to serve.
pub struct StartedWorker {
    pub name: String,
    pub worker: Arc<dyn Worker>,
    pub env: Env,
}

/// The workers of an app, and which worker runs which class's hooks: they are attached
/// with [`Started::attach_hooks`] once the workers are to serve.
pub struct Started {
    pub workers: Vec<StartedWorker>,
    hooks: Vec<(Arc<JsHooks>, Arc<JsWorker>, String)>,
    /// The workers' cron schedules, run by [`Started::start_schedules`].
    schedules: Vec<Planned>,
}

impl Started {
    /// Makes each class's hooks run in the worker chosen for it.
    pub fn attach_hooks(&self) {
        for (hooks, worker, binding) in &self.hooks {
            hooks.run_in(worker, binding);
        }
    }

    /// Starts the workers' cron schedules, once they serve; they run until the result is
    /// dropped.
    pub fn start_schedules(&self) -> Running {
        Planned::start(&self.schedules, crate::cron::Clock::System)
    }

    /// Whether `hooks` got a worker.
    pub fn hooks_attached(&self, hooks: &Arc<JsHooks>) -> bool {
        self.hooks.iter().any(|(h, _, _)| Arc::ptr_eq(h, hooks))
    }
}

/// Starts `workers`, each with the classes it binds (`classes`: by container resource
/// id), and picks the worker for each class's hooks.
pub async fn start_workers(
    workers: &[WorkerDef],
    classes: &BTreeMap<String, BoundClass>,
    limits: WorkerLimits,
) -> Result<Started, WorkersError> {
    let mut started = Vec::new();
    let mut js = Vec::new();
    let mut schedules = Vec::new();
    for def in workers {
        let mut env = Env::new();
        for (binding, container) in &def.bindings {
            if let Some(class) = classes.get(container) {
                env.bind(binding.clone(), Binding::Container(class.namespace.clone()));
            }
        }
        let worker: Arc<dyn Worker> = match &def.script {
            Some(script) => {
                let worker =
                    Arc::new(JsWorker::start(&def.name, script, env.clone(), limits).await?);
                schedules.extend(cron_triggers(&def.name, &script.crons, &worker, classes)?);
                js.push((def, worker.clone()));
                worker
            }
            None => {
                let router = Router::new(def.routes.clone(), &env)?;
                schedules.extend(router.plan_schedules(&def.name, &def.schedules)?);
                Arc::new(router)
            }
        };
        started.push(StartedWorker {
            name: def.name.clone(),
            worker,
            env,
        });
    }
    let mut hooks = Vec::new();
    for (id, class) in classes {
        let binding = |def: &WorkerDef| {
            def.bindings
                .iter()
                .find(|(_, container)| *container == id)
                .map(|(binding, _)| binding.clone())
        };
        let exporter = js.iter().find(|(def, _)| {
            class.exported_by.is_some()
                && def.script.as_ref().map(|s| &s.entrypoint) == class.exported_by.as_ref()
                && binding(def).is_some()
        });
        let chosen = exporter.or_else(|| js.iter().find(|(def, _)| binding(def).is_some()));
        if let Some((def, worker)) = chosen {
            if let Some(binding) = binding(def) {
                hooks.push((class.hooks.clone(), worker.clone(), binding));
            }
        }
    }
    Ok(Started {
        workers: started,
        hooks,
        schedules,
    })
}

/// The cron triggers of JS worker `name`: each tick runs its `scheduled` handler. When
/// each last ran is kept in the app's store (that of its containers' classes), so that a
/// tick missed while berth was down runs at the next start; on a cluster, the router
/// that is home to the trigger's name runs it.
fn cron_triggers(
    name: &str,
    crons: &[crate::cron::Cron],
    worker: &Arc<JsWorker>,
    classes: &BTreeMap<String, BoundClass>,
) -> Result<Vec<Planned>, WorkersError> {
    if crons.is_empty() {
        return Ok(Vec::new());
    }
    let Some(namespace) = classes.values().map(|c| c.namespace.clone()).next() else {
        return Err(WorkersError::Script(ScriptError::Engine {
            path: PathBuf::from(name),
            reason: format!("worker {name} has crons, and berth keeps when they ran with the app's containers; declare a Container"),
        }));
    };
    let app = namespace
        .key()
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    Ok(crons
        .iter()
        .map(|cron| {
            let key = format!("{app}/{name}/{cron}|scheduled");
            let store = namespace.store().clone();
            let (worker, namespace, home) = (worker.clone(), namespace.clone(), key.clone());
            let tick_cron = cron.clone();
            let deliver: Delivery = Arc::new(move |tick| {
                let (worker, namespace, home, cron) = (
                    worker.clone(),
                    namespace.clone(),
                    home.clone(),
                    tick_cron.clone(),
                );
                Box::pin(async move {
                    if !namespace.is_home_of_name(&home) {
                        return Ok(());
                    }
                    worker.scheduled(&cron, tick).await
                })
            });
            Planned::new(key, cron.clone(), store, deliver)
        })
        .collect())
}
