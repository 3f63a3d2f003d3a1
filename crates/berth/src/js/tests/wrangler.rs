//! Wrangler projects: what berth reads of a configuration, and what it refuses.

use super::*;

const WRANGLER_WORKER: &str = r#"import { Container } from "@cloudflare/containers";
export class Api extends Container { defaultPort = 9000; }
export class Cache extends Container {}
export default { fetch: () => new Response("hi") };
"#;

#[test]
fn a_wrangler_toml_declares_containers_bindings_vars_routes_and_crons() {
    let config = r#"name = "shop"
main = "src/index.ts"
compatibility_date = "2026-05-12"
routes = [{ pattern = "shop.example.com/*", zone_name = "example.com" }, "api.example.com/v1/*", "*example.org/*", ""]
[vars]
GREETING = "hello"
LIMITS = { max = 3 }
[triggers]
crons = ["*/5 * * * *"]
[secrets]
required = ["TOKEN", "PATH"]
[[containers]]
class_name = "Api"
image = "./docker/api/Dockerfile"
image_build_context = "./docker"
image_vars = { VERSION = "2" }
max_instances = 7
instance_type = "basic"
[[containers]]
class_name = "Cache"
image = "registry.example.com/cache:1"
instance_type = { vcpu = 2, memory_mib = 3072, disk_mb = 8000 }
[[durable_objects.bindings]]
name = "API"
class_name = "Api"
[[durable_objects.bindings]]
name = "CACHE"
class_name = "Cache"
"#;
    let dir = app(
        "wrangler",
        &[
            ("wrangler.toml", config),
            ("src/index.ts", WRANGLER_WORKER),
            ("docker/api/Dockerfile", "FROM scratch\n"),
            (
                ".dev.vars",
                "# local secrets\nTOKEN=\"from dev vars\"\nexport GREETING=overridden\n",
            ),
        ],
    );
    let program = load_program(&dir, quick()).expect("loads");
    let manifest = &program.manifest;
    assert_eq!(manifest.name, "shop");
    let api = &manifest.containers[0];
    assert_eq!(api.class.name, "Api");
    assert_eq!(api.class.default_port, Some(9000), "the class's fields");
    assert_eq!(api.class.max_instances, 7);
    assert!(api.class.instance_type.is_some());
    let crate::manifest::ImageSource::Build(build) = &api.image else {
        panic!("Api is built");
    };
    assert_eq!(build.context, dir.join("docker"));
    assert_eq!(build.dockerfile, "api/Dockerfile");
    assert_eq!(build.args.get("VERSION").map(String::as_str), Some("2"));
    let custom = manifest.containers[1]
        .class
        .instance_type
        .expect("a custom type");
    assert_eq!((custom.vcpu, custom.memory_mib), (2.0, 3072));
    assert!(matches!(
        &manifest.containers[1].image,
        crate::manifest::ImageSource::Prebuilt(image) if image == "registry.example.com/cache:1"
    ));
    let worker = &manifest.workers[0];
    assert_eq!(worker.bindings.get("API").map(String::as_str), Some("Api"));
    assert_eq!(
        worker.bindings.get("CACHE").map(String::as_str),
        Some("Cache")
    );
    // A path routes its whole host; *example.org is the apex and its subdomains.
    let hosts: Vec<String> = worker.hosts.iter().map(|h| h.to_string()).collect();
    assert_eq!(
        hosts,
        [
            "shop.example.com",
            "api.example.com",
            "example.org",
            "*.example.org"
        ]
    );
    let script = worker.script.as_ref().expect("a JS worker");
    assert_eq!(script.entrypoint, dir.join("src/index.ts"));
    // .dev.vars over vars, and a required secret from berth's environment.
    assert_eq!(
        script.vars.get("GREETING").map(String::as_str),
        Some("overridden")
    );
    assert_eq!(
        script.vars.get("TOKEN").map(String::as_str),
        Some("from dev vars")
    );
    assert_eq!(script.vars.get("PATH"), std::env::var("PATH").ok().as_ref());
    assert_eq!(
        script.vars.get("LIMITS").map(String::as_str),
        Some(r#"{"max":3}"#)
    );
    assert!(script.json_vars.contains("LIMITS"));
    assert!(!script.json_vars.contains("GREETING"));
    assert_eq!(script.crons.len(), 1);
    // What berth deploy ships: the configuration and the worker's code, not the secrets.
    assert!(program.files.contains(&dir.join("wrangler.toml")));
    assert!(!program.files.contains(&dir.join(".dev.vars")));
    assert!(program.files.contains(&dir.join("src/index.ts")));
}

#[test]
fn a_wrangler_project_that_berth_cannot_run_says_why() {
    let cases = [
        (
            r#"{ "name": "Shop", "main": "src/index.ts" }"#,
            "name \"Shop\" is not a valid app name",
        ),
        (
            r#"{ "main": "src/index.ts", "containers": [{ "class_name": "Api", "image": "../Dockerfile", "image_build_context": "." }] }"#,
            "the Dockerfile ../Dockerfile is not inside the build context .",
        ),
        (
            r#"{ "main": "src/index.ts", "containers": [{ "class_name": "Api", "image": "./Dockerfile" }],
                 "durable_objects": { "bindings": [{ "name": "API", "class_name": "Api", "script_name": "other" }] } }"#,
            "script_name \"other\" binds another worker's class",
        ),
        (
            r#"{ "main": "src/index.ts", "containers": [{ "class_name": "Api", "image": "./Dockerfile" }],
                 "durable_objects": { "bindings": [{ "name": "ROOM", "class_name": "Room" }] } }"#,
            "binds Durable Object class Room, which no Container declares",
        ),
        (
            r#"{ "containers": [{ "class_name": "Api", "image": "./Dockerfile" }] }"#,
            "main is missing",
        ),
        (
            r#"{ "main": "src/index.ts", "containers": [{ "class_name": "Api", "image": "./Dockerfile", "instance_type": { "vcpu": 0 } }] }"#,
            "instanceType: vcpu is a number above 0",
        ),
        (
            r#"{ "main": "src/index.ts", "kv_namespaces": [{ "binding": "KV", "id": "1" }] }"#,
            "kv_namespaces: berth binds containers",
        ),
        (
            r#"{ "main": "src/index.ts", "secrets": { "required": ["BERTH_TEST_NEVER_SET_SECRET"] } }"#,
            "secrets.required names BERTH_TEST_NEVER_SET_SECRET, which is neither in .dev.vars",
        ),
    ];
    for (i, (config, needle)) in cases.into_iter().enumerate() {
        let dir = app(
            &format!("wrangler-bad-{i}"),
            &[
                ("wrangler.jsonc", config),
                ("src/index.ts", WRANGLER_WORKER),
                ("Dockerfile", "FROM scratch\n"),
            ],
        );
        let err = load_program(&dir, quick()).expect_err(needle);
        let text = err.to_string();
        assert!(text.contains(needle), "{needle}: {text}");
        assert!(text.contains("wrangler.jsonc"), "{text}");
    }
}
