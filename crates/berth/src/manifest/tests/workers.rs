//! The manifest's workers: start-only routes, hosts, vars and secrets, wake and keep-warm,
//! and cron schedules.

use super::*;

#[test]
fn a_start_only_route_parses() {
    let m = parse(&SEED.replace(
        "instance = \"container\" }",
        "instance = \"container\", start_only = true }",
    ))
    .expect("valid");
    assert!(m.workers[0].routes[3].start_only);
    assert!(!m.workers[0].routes[0].start_only);
}

#[test]
fn workers_may_list_their_hosts() {
    let with = |hosts: &str| {
        SEED.replace(
            "bindings = { MY_CONTAINER = \"my-container\" }",
            &format!("bindings = {{ MY_CONTAINER = \"my-container\" }}\nhosts = {hosts}"),
        )
    };
    let m = parse(&with("[\"API.example.com\", \"*.preview.example.com\"]")).expect("valid");
    let hosts: Vec<&str> = m.workers[0].hosts.iter().map(|h| h.as_str()).collect();
    assert_eq!(hosts, ["api.example.com", "*.preview.example.com"]);
    assert!(parse(SEED).expect("valid").workers[0].hosts.is_empty());
    let e = error(&with("[\"https://a.com\"]"));
    assert!(
        e.contains("workers.my-worker.hosts[0]: \"https://a.com\" is not a host name"),
        "{e}"
    );
    let e = error(&with("[\"a.com\", \"A.com\"]"));
    assert!(e.contains("hosts[1]: a.com is listed twice"), "{e}");
}

#[test]
fn a_worker_prints_no_secret_but_a_digest_that_follows_it() {
    let script = |value: &str| WorkerScript {
        entrypoint: PathBuf::from("src/worker.ts"),
        vars: BTreeMap::from([("API_KEY".to_string(), value.to_string())]),
        json_vars: Default::default(),
        crons: Vec::new(),
    };
    let one = format!("{:?}", script("hunter2-secret"));
    let other = format!("{:?}", script("hunter3-secret"));
    assert!(!one.contains("hunter2"), "{one}");
    assert!(one.contains("API_KEY"), "{one}");
    assert_ne!(one, other);
}

#[test]
fn wake_fallback_and_keep_warm_are_checked_where_they_are_written() {
    let last = "instance = \"container\" },";
    let e = error(&SEED.replace(last, "instance = \"container\", fallback = true },"));
    assert!(
        e.contains("routes[3].fallback: applies to a route that does not wake its instance"),
        "{e}"
    );
    let e = error(&SEED.replace(last, "instance = \"container\", keep_warm = true },"));
    assert!(
        e.contains("routes[3].keep_warm: keeps a pool running"),
        "{e}"
    );
    let pool = "instance = { pool = 3, strategy = \"round-robin\" } },";
    let e = error(&SEED.replace(
        pool,
        "instance = { pool = 3 }, keep_warm = true, wake = false },",
    ));
    assert!(
        e.contains("routes[1].keep_warm: keeps the pool running"),
        "{e}"
    );
    // A fallback route lets the routes after it be reached, even those it covers.
    let m = parse(&SEED.replace(
        last,
        "instance = \"a\", wake = false, fallback = true },\n  { path = \"/*\", binding = \"MY_CONTAINER\", instance = \"b\" },",
    ))
    .expect("parses");
    let routes = &m.workers[0].routes;
    assert!(!routes[3].wake && routes[3].fallback);
    assert!(routes[4].wake && !routes[4].fallback);
    let m = parse(&SEED.replace(pool, "instance = { pool = 3 }, keep_warm = true },"));
    assert!(m.expect("parses").workers[0].routes[1].keep_warm);
}

#[test]
fn workers_may_list_cron_schedules_each_checked_against_the_routes() {
    let with = |schedules: &str| {
        SEED.replace(
            "bindings = { MY_CONTAINER = \"my-container\" }",
            &format!("bindings = {{ MY_CONTAINER = \"my-container\" }}\nschedules = {schedules}"),
        )
    };
    let m = parse(&with(
        "[{ cron = \"*/5 * * * *\", path = \"/tick?x=1\" }, { cron = \"@daily\", path = \"/users/ann/report\", instance = \"reporter\" }]",
    ))
    .expect("valid");
    let schedules = &m.workers[0].schedules;
    assert_eq!(schedules.len(), 2);
    assert_eq!(schedules[0].cron.to_string(), "*/5 * * * *");
    assert_eq!(
        (schedules[0].path.as_str(), schedules[0].instance.as_deref()),
        ("/tick?x=1", None)
    );
    assert_eq!(schedules[1].instance.as_deref(), Some("reporter"));
    for (schedules, place, says) in [
        (
            "[{ cron = \"*/5 * * *\", path = \"/tick\" }]",
            "app/berth.toml:19:",
            "workers.my-worker.schedules[0].cron: \"*/5 * * *\" has 4 fields",
        ),
        (
            "[{ cron = \"61 * * * *\", path = \"/tick\" }]",
            "app/berth.toml:19:",
            "\"61\" as its minute",
        ),
        (
            "[{ cron = \"* * * * *\", path = \"tick\" }]",
            "app/berth.toml:19:",
            "schedules[0].path: \"tick\" matches none of the worker's routes",
        ),
        (
            "[{ cron = \"* * * * *\", path = \"/users/ann/report\" }]",
            "app/berth.toml:19:",
            "schedules[0].instance: is needed: route /users/:user/* takes the object's name",
        ),
        (
            "[{ cron = \"* * * * *\", path = \"/tick\", every = 5 }]",
            "app/berth.toml:19:",
            "schedules[0].every: unknown key `every`; accepted keys: cron, path, instance",
        ),
    ] {
        let e = error(&with(schedules));
        assert!(e.starts_with(place) && e.contains(says), "{schedules}: {e}");
    }
}
