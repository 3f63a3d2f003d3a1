use super::*;
use crate::router::{KeySource, Strategy, Target};
use std::time::Duration;

/// What the manifest says of workers: routes, hosts, secrets and schedules.
mod workers;

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

#[test]
fn settings_that_can_never_work_are_errors_at_their_place() {
    let class = |line: &str| {
        SEED.replace(
            "default_port = 8080",
            &format!("default_port = 8080\n{line}"),
        )
    };
    let cases = [
        (
            SEED.replace("MESSAGE =", "\"\" ="),
            "app/berth.toml:15:",
            "containers.my-container.class.env_vars.\"\": an environment variable needs a name",
        ),
        (
            SEED.replace("MESSAGE =", "\"A=B\" ="),
            "app/berth.toml:15:",
            "cannot hold '='",
        ),
        (
            class("start_timeout = \"0s\""),
            "app/berth.toml:14:17:",
            "containers.my-container.class.start_timeout: 0s leaves no time to start a container",
        ),
        (
            SEED.replace("sleep_after = \"3m\"", "sleep_after = 0"),
            "app/berth.toml:14:15:",
            "containers.my-container.class.sleep_after: 0s would stop each container",
        ),
        (
            class("ready = { path = \"healthz\" }"),
            "app/berth.toml:14:",
            "containers.my-container.class.ready.path: \"healthz\" is not a path",
        ),
        (
            class("ready = { path = \"/healthz\", status = [200, 700] }"),
            "app/berth.toml:14:",
            "ready.status: 700 is not an HTTP status",
        ),
        (
            class("ready = { path = \"/healthz\", interval = 0 }"),
            "app/berth.toml:14:",
            "ready.interval: 0s would ask without pause",
        ),
        (
            class("ping_endpoint = \"ping\"\nready = { path = \"/healthz\" }"),
            "app/berth.toml:15:9:",
            "give ready or ping_endpoint, not both",
        ),
        (
            class("ready = { path = \"/healthz\", codes = [200] }"),
            "app/berth.toml:14:",
            "ready.codes: unknown key `codes`; accepted keys: path, status, interval",
        ),
        (
            class("sleep_mode = \"freeze\""),
            "app/berth.toml:14:",
            "class.sleep_mode: \"freeze\" is not a sleep mode; give \"stop\" (the default) or \"pause\"",
        ),
        (
            class("sleep_mode = \"pause\"\nmax_paused = 0"),
            "app/berth.toml:15:",
            "class.max_paused: 0 would stop every container as soon as it pauses",
        ),
        (
            class("volumes = [\"data\"]"),
            "app/berth.toml:14:",
            "class.volumes: \"data\" is not an absolute path",
        ),
        (
            class("allowed_hosts = [\"api.github.com\", \"https://pypi.org\"]"),
            "app/berth.toml:14:",
            "class.allowed_hosts: \"https://pypi.org\" is not a host",
        ),
        (
            class("denied_hosts = [\"a b\"]"),
            "app/berth.toml:14:",
            "class.denied_hosts: \"a b\" holds ' '",
        ),
        (
            class("volumes = [\"/data\", \"/data/\"]"),
            "app/berth.toml:14:",
            "class.volumes: \"/data/\" is listed twice",
        ),
        (
            class("log_max = \"1KiB\""),
            "app/berth.toml:14:",
            "containers.my-container.class.log_max: must be at least 64KiB",
        ),
        (
            class("log_max = \"ten\""),
            "app/berth.toml:14:",
            "invalid size \"ten\"",
        ),
        (
            class("request_timeout = \"0ms\""),
            "app/berth.toml:14:",
            "request_timeout: 0s would end every request at once",
        ),
        (
            class("labels = { \"berth.app\" = \"x\" }"),
            "app/berth.toml:14:",
            "labels.\"berth.app\": an empty label or one starting with berth. is berth's own",
        ),
        (
            SEED.replace("path = \"/lb/*\"", "path = \"/lb?x=1\""),
            "app/berth.toml:21:",
            "holds '?', which never reaches a route",
        ),
        (
            SEED.replace("path = \"/lb/*\"", "path = \"/users/:id/*\""),
            "app/berth.toml:21:",
            "workers.my-worker.routes[1].path: path /users/:id/* is never reached: routes[0] (path /users/:user/*) matches every path it does",
        ),
    ];
    for (text, place, message) in cases {
        let e = error(&text);
        assert!(e.starts_with(place), "{e}");
        assert!(e.contains(message), "{e}");
    }
    // A later, narrower route after a catch-all is never reached either.
    let e = error(&SEED.replace(
        "{ path = \"/*\",             binding = \"MY_CONTAINER\", instance = \"container\" },",
        "{ path = \"/*\", binding = \"MY_CONTAINER\", instance = \"container\" },\n  { path = \"/x\", binding = \"MY_CONTAINER\", instance = \"x\" },",
    ));
    assert!(
        e.contains("routes[4].path: path /x is never reached: routes[3] (path /*)"),
        "{e}"
    );
    // No grace at all is allowed: it means SIGKILL at once.
    assert!(parse(&class("stop_grace = 0")).is_ok());
    let ready = parse(&class(
        "ready = { path = \"/healthz\", status = [200, 204], interval = \"20ms\" }",
    ))
    .map(|m| m.containers[0].class.ready.clone());
    let expected = crate::class::ReadyCheck {
        path: "/healthz".into(),
        status: vec![200, 204],
        interval: std::time::Duration::from_millis(20),
    };
    assert_eq!(ready.ok().flatten(), Some(expected));
    let never = parse(&SEED.replace("sleep_after = \"3m\"", "sleep_after = \"never\""));
    assert_eq!(
        never.map(|m| m.containers[0].class.sleep_after).ok(),
        Some(crate::class::ContainerClass::NEVER)
    );
    let volumes = parse(&class("volumes = [\"/data/\", \"/cache\"]"))
        .map(|m| m.containers[0].class.volumes.clone());
    assert_eq!(
        volumes.ok(),
        Some(vec!["/data".to_string(), "/cache".to_string()])
    );
    let hosts = parse(&class(
        "enable_internet = false\nallowed_hosts = [\"API.github.com\", \"*.example.com\"]\ndenied_hosts = [\"x.example.com\"]",
    ))
    .map(|m| m.containers[0].class.clone());
    let hosts = hosts.expect("hosts parse");
    assert_eq!(hosts.allowed_hosts, ["api.github.com", "*.example.com"]);
    assert_eq!(hosts.denied_hosts, ["x.example.com"]);
    assert!(!hosts.enable_internet);
    let paused = parse(&class(
        "sleep_mode = \"pause\"\npause_for = \"30m\"\nmax_paused = 3",
    ))
    .map(|m| m.containers[0].class.clone())
    .expect("pause mode parses");
    assert_eq!(paused.sleep_mode, crate::class::SleepMode::Pause);
    assert_eq!(paused.pause_for, Duration::from_secs(1800));
    assert_eq!(paused.max_paused, Some(3));
    let kept = |line: &str| parse(&class(line)).map(|m| m.containers[0].class.log_max);
    assert_eq!(kept("log_max = \"512KiB\"").ok(), Some(512 * 1024));
    assert_eq!(kept("log_max = 1000000").ok(), Some(1_000_000));
}

#[test]
fn parser_errors_speak_of_toml_not_rust() {
    let e = error(&SEED.replace(
        "max_instances = 20",
        "max_instances = 20\nmax_instances = 21",
    ));
    assert!(
        e.starts_with("app/berth.toml:10:1: duplicate key `max_instances`"),
        "{e}"
    );
    let e = error(&SEED.replace("max_instances = 20", "max_instances = \"many\""));
    assert!(
        e.contains("max_instances: the string \"many\" is not accepted here; expected a whole number, 0 or more"),
        "{e}"
    );
    let e = error(&SEED.replace("default_port = 8080", "default_port = 80.5"));
    assert!(
        e.contains("default_port: the number `80.5` is not accepted here; expected a whole number"),
        "{e}"
    );
    assert!(!e.contains("i64"), "{e}");
    let e = error(&SEED.replace("\"3m\"", "\"1.5m\""));
    assert!(
        e.contains("fractions are not accepted; use a smaller unit"),
        "{e}"
    );
}

#[test]
fn rollouts_default_to_wranglers_and_must_end_at_100() {
    let m = parse(SEED).expect("valid");
    assert_eq!(m.containers[0].rollout.steps, [10, 100]);
    assert_eq!(m.containers[0].rollout.grace, Duration::from_secs(30));
    let with = |r: &str| {
        SEED.replace(
            "max_instances = 20",
            &format!("max_instances = 20\nrollout = {r}"),
        )
    };
    let m = parse(&with("{ steps = [25, 50, 100], grace = \"5s\" }")).expect("valid");
    assert_eq!(m.containers[0].rollout.steps, [25, 50, 100]);
    assert_eq!(m.containers[0].rollout.grace, Duration::from_secs(5));
    for bad in [
        "{ steps = [50] }",
        "{ steps = [50, 10, 100] }",
        "{ steps = [] }",
    ] {
        let e = error(&with(bad));
        assert!(e.contains("containers.my-container.rollout.steps"), "{e}");
        assert!(e.contains("end at 100"), "{e}");
    }
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

#[test]
fn standby_sits_beside_max_instances_and_refuses_what_a_spare_cannot_be() {
    let m = parse(&SEED.replace("max_instances = 20", "max_instances = 20\nstandby = 3"));
    assert_eq!(m.expect("parses").containers[0].class.standby, 3);
    let e = error(&SEED.replace("max_instances = 20", "max_instances = 2\nstandby = 3"));
    assert!(
        e.contains("standby: 3 standby containers do not fit in max_instances = 2"),
        "{e}"
    );
    assert!(e.starts_with("app/berth.toml:10:11:"), "{e}");
    let e = error(
        &SEED
            .replace("max_instances = 20", "max_instances = 20\nstandby = 1")
            .replace(
                "[containers.my-container.class]",
                "[containers.my-container.class]\nvolumes = [\"/data\"]",
            ),
    );
    assert!(
        e.contains("a class with volumes cannot keep standby containers"),
        "{e}"
    );
}
