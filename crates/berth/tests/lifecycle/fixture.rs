//! The shared fixture of the lifecycle tests: an app on the fake runtime, hooks that
//! write down every call, and a request helper.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use berth::runtime::fake::{Behaviour, FakeRuntime};
use berth::runtime::{ContainerSpec, Identity, Runtime};
use berth::store::ObjectRecord;
use berth::{
    App, Body, ContainerClass, Event, Hooks, Namespace, Object, ObjectError, State, StopParams,
    Store,
};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::time::sleep;

pub const IMAGE: &str = "fake/app:1";
pub const SLEEP_AFTER: Duration = Duration::from_secs(10);
pub const GRACE: Duration = Duration::from_secs(5);

/// Records every hook call as `<object>: <what>`.
#[derive(Default)]
pub struct Recorder {
    calls: Mutex<Vec<String>>,
}

impl Recorder {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("recorder").clone()
    }

    fn push(&self, object: &Object, what: String) {
        let name = object.name().unwrap_or("?").to_string();
        self.calls
            .lock()
            .expect("recorder")
            .push(format!("{name}: {what}"));
    }
}

#[async_trait]
impl Hooks for Recorder {
    async fn on_start(&self, object: &Object) {
        self.push(object, "start".into());
    }

    async fn on_stop(&self, object: &Object, params: StopParams) {
        self.push(object, format!("stop ({})", params.reason));
    }

    async fn on_error(&self, object: &Object, _error: &ObjectError) {
        self.push(object, "error".into());
    }
}

pub struct Fixture {
    pub app: App,
    pub fake: Arc<FakeRuntime>,
    pub ns: Namespace,
    pub hooks: Arc<Recorder>,
    pub events: tokio::sync::broadcast::Receiver<Event>,
}

impl Fixture {
    pub fn new(behaviour: Behaviour) -> Fixture {
        Fixture::with(behaviour, |_| {}, Store::in_memory().expect("store"))
    }

    pub fn with(
        behaviour: Behaviour,
        adjust: impl FnOnce(&mut ContainerClass),
        store: Store,
    ) -> Fixture {
        Fixture::on(FakeRuntime::new(), behaviour, adjust, store)
    }

    /// An app on `fake`, whose containers of [`IMAGE`] behave as `behaviour` says. Each
    /// fixture's app has a name of its own, as tests run side by side.
    pub fn on(
        fake: Arc<FakeRuntime>,
        behaviour: Behaviour,
        adjust: impl FnOnce(&mut ContainerClass),
        store: Store,
    ) -> Fixture {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("lifecycle-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        Fixture::named(&name, fake, behaviour, adjust, store)
    }

    /// [`Fixture::on`], with the app called `name`.
    pub fn named(
        name: &str,
        fake: Arc<FakeRuntime>,
        behaviour: Behaviour,
        adjust: impl FnOnce(&mut ContainerClass),
        store: Store,
    ) -> Fixture {
        fake.image(IMAGE, behaviour);
        let app = App::new(name, fake.clone(), store).expect("app");
        let mut class = ContainerClass::new("Fake", IMAGE);
        class.default_port = Some(8080);
        class.sleep_after = SLEEP_AFTER;
        class.stop_grace = GRACE;
        adjust(&mut class);
        let hooks = Arc::new(Recorder::default());
        let ns = app.namespace(class, hooks.clone());
        let events = app.events();
        Fixture {
            app,
            fake,
            ns,
            hooks,
            events,
        }
    }

    /// The events so far, as their one-line texts.
    pub fn events(&mut self) -> Vec<Event> {
        let mut seen = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            seen.push(event);
        }
        seen
    }
}

pub fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("host", "localhost")
        .body(berth::http::full(""))
        .expect("request")
}

pub async fn fetch(object: &Object, path: &str) -> (StatusCode, String, String) {
    let response = object.fetch(get(path)).await;
    let status = response.status();
    let kind = response
        .headers()
        .get("berth-error")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, kind, String::from_utf8_lossy(&body).into_owned())
}

/// Lets the lifecycle's own tasks finish what they began. Paused time does not advance
/// while the store writes on the blocking pool, so each short sleep waits for those too.
pub async fn settle() {
    for _ in 0..10 {
        sleep(Duration::from_millis(1)).await;
    }
}

/// The identity of `object`'s container as an earlier berth, whose session has ended,
/// left it: its session is dead, so a recovery may take it over.
pub fn left_identity(f: &Fixture, object: &str) -> Identity {
    Identity {
        app: f.app.name().to_string(),
        class: "Fake".into(),
        object_id: f.ns.id_from_name(object),
        object_name: Some(object.into()),
        session: "0123456789abcdef".into(),
        host: String::new(),
        version: String::new(),
        standby: false,
    }
}

/// A running container of [`IMAGE`] with `identity`, as an earlier berth left it, and,
/// when `owner` is given, `store`'s record that it is that object's healthy container.
pub async fn left_behind(
    f: &Fixture,
    store: &Store,
    identity: Identity,
    owner: Option<&str>,
) -> String {
    let spec = ContainerSpec {
        identity,
        image: IMAGE.into(),
        env: Default::default(),
        entrypoint: None,
        labels: Default::default(),
        ports: vec![8080],
        egress: berth::egress::Policy::open(),
        init: true,
        stop_grace: std::time::Duration::from_secs(10),
        nano_cpus: 0,
        memory_bytes: 0,
        volumes: Vec::new(),
    };
    let created = f.fake.create(&spec).await.expect("create");
    f.fake.start(&created.id).await.expect("start");
    if let Some(name) = owner {
        store
            .save_object(ObjectRecord {
                namespace: f.ns.key().to_string(),
                id: f.ns.id_from_name(name).to_string(),
                name: Some(name.into()),
                state: State::Healthy,
                container_id: Some(created.id.clone()),
                started_at_ms: Some(0),
                updated_at_ms: 0,
            })
            .await
            .expect("save");
    }
    created.id
}
