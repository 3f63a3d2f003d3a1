//! What a program imports: modules loaded later, and packages of node_modules.

use super::*;

#[test]
fn a_program_ships_what_its_workers_import_at_run_time_by_a_name_written_out() {
    let worker = r#"export { Web } from "./web.ts";
export default {
  async fetch(request: Request) {
    const { answer } = await import("./lazy.ts");
    const computed = "./" + "nowhere.ts";
    if (request.url.endsWith("/never")) await import(computed);
    return new Response(answer());
  },
};
"#;
    let lazy = "import { word } from \"./words/index.ts\";\nimport type { Unused } from \"./types.ts\";\nimport { Shape } from \"../outside.ts\";\nexport const answer = (shape?: Shape): string => word;\n";
    let root = app(
        "later",
        &[
            ("app/alchemy.run.ts", DECLARE),
            ("app/worker.ts", worker),
            ("app/web.ts", CLASS),
            ("app/lazy.ts", lazy),
            ("app/words/index.ts", "export const word = \"later\";\n"),
            ("app/types.ts", "export type Unused = number;\n"),
            ("app/unrelated.ts", "export const no = 1;\n"),
            ("outside.ts", "export interface Shape { n: number }\n"),
        ],
    );
    let dir = root.join("app");
    let names = shipped(&dir);
    // The lazily imported module and what it imports; not the type-only imports (one
    // written as a value import, of a file outside the app, too), not a name computed at
    // run time, not a file nothing imports.
    assert_eq!(
        names,
        [
            "alchemy.run.ts",
            "lazy.ts",
            "web.ts",
            "words/index.ts",
            "worker.ts"
        ]
    );

    let broken = app(
        "later-broken",
        &[
            ("alchemy.run.ts", DECLARE),
            ("worker.ts", "export { Web } from \"./web.ts\";\nexport default { fetch: () => import(\"./bad.ts\") };\n"),
            ("web.ts", CLASS),
            ("bad.ts", "export const = ;\n"),
        ],
    );
    let err = load_program(&broken, quick()).expect_err("a syntax error");
    assert!(
        matches!(&err, ScriptError::Syntax { at, .. } if at.path.ends_with("bad.ts") && at.line == 1),
        "{err}"
    );
}

#[tokio::test]
async fn packages_of_node_modules_are_imported_shipped_and_served() {
    let worker = r#"import { greet } from "greeter";
import { shout } from "greeter/shout";
import { tiny } from "@acme/tiny";
export { Web } from "./web.ts";
export default { fetch: () => new Response(`${greet("you")} ${shout("hi")} ${tiny}`) };
"#;
    let files = [
        ("alchemy.run.ts", DECLARE),
        ("worker.ts", worker),
        ("web.ts", CLASS),
        (
            "node_modules/greeter/package.json",
            r#"{ "name": "greeter", "exports": { ".": { "types": "./index.d.ts", "require": "./index.cjs", "import": "./esm/index.js" }, "./shout": "./esm/shout.js" } }"#,
        ),
        ("node_modules/greeter/index.cjs", "module.exports = {};\n"),
        (
            "node_modules/greeter/esm/index.js",
            "import { tiny } from \"@acme/tiny\";\nimport { word } from \"./word.js\";\nexport const greet = (name) => `${word}, ${name} (${tiny})`;\n",
        ),
        ("node_modules/greeter/esm/word.js", "export const word = \"hello\";\n"),
        ("node_modules/greeter/esm/shout.js", "export const shout = (s) => s.toUpperCase();\n"),
        ("node_modules/greeter/esm/unused.js", "export const no = 1;\n"),
        (
            "node_modules/@acme/tiny/package.json",
            r#"{ "name": "@acme/tiny", "module": "dist/tiny.mjs", "main": "dist/tiny.cjs" }"#,
        ),
        ("node_modules/@acme/tiny/dist/tiny.mjs", "export const tiny = \"tiny\";\n"),
    ];
    let dir = app("packages", &files);
    let names = shipped(&dir);
    // What the worker imports, with each package's package.json; not the CommonJS build
    // or a file nothing imports.
    assert_eq!(
        names,
        [
            "alchemy.run.ts",
            "node_modules/@acme/tiny/dist/tiny.mjs",
            "node_modules/@acme/tiny/package.json",
            "node_modules/greeter/esm/index.js",
            "node_modules/greeter/esm/shout.js",
            "node_modules/greeter/esm/word.js",
            "node_modules/greeter/package.json",
            "web.ts",
            "worker.ts"
        ]
    );
    let script = crate::manifest::WorkerScript {
        entrypoint: dir.join("worker.ts"),
        vars: Default::default(),
        json_vars: Default::default(),
        crons: Vec::new(),
    };
    let worker = JsWorker::start(
        "packages",
        &script,
        crate::worker::Env::new(),
        WorkerLimits::default(),
    )
    .await
    .expect("the worker starts");
    let request = get_root();
    let (status, _, body) = through(&worker, request).await;
    assert_eq!(
        (status.as_u16(), String::from_utf8_lossy(&body).as_ref()),
        (200, "hello, you (tiny) HI tiny")
    );
}

#[test]
fn a_package_that_is_missing_or_commonjs_only_is_named_in_the_error() {
    let missing = program(
        "no-package",
        DECLARE,
        &[(
            "worker.ts",
            "import \"left-pad\";\nexport { Web } from \"./web.ts\";\nexport default {};\n",
        )],
    )
    .expect_err("no such package");
    let text = missing.to_string();
    assert!(
        text.contains("\"left-pad\"") && text.contains("node_modules"),
        "{text}"
    );
    let commonjs = program(
        "cjs-package",
        DECLARE,
        &[
            (
                "worker.ts",
                "import \"old\";\nexport { Web } from \"./web.ts\";\nexport default {};\n",
            ),
            (
                "node_modules/old/package.json",
                r#"{ "main": "index.cjs" }"#,
            ),
            ("node_modules/old/index.cjs", "module.exports = 1;\n"),
        ],
    )
    .expect_err("CommonJS");
    let text = commonjs.to_string();
    assert!(
        text.contains("\"old\"") && text.contains("CommonJS"),
        "{text}"
    );
    // CommonJS in a .js file fails as it runs, and says why.
    let hidden = program(
        "cjs-in-js",
        DECLARE,
        &[
            (
                "worker.ts",
                "import \"older\";\nexport { Web } from \"./web.ts\";\nexport default {};\n",
            ),
            (
                "node_modules/older/package.json",
                r#"{ "main": "index.js" }"#,
            ),
            (
                "node_modules/older/index.js",
                "module.exports = { a: 1 };\n",
            ),
        ],
    )
    .expect_err("CommonJS");
    let text = hidden.to_string();
    assert!(
        text.contains("older/index.js") && text.contains("is CommonJS"),
        "{text}"
    );
}
