//! The library's modules stand on floors, and imports point down: a module may use the
//! modules of its own floor and of the floors below, never those above, and no modules
//! import each other in a circle (a module and its own children aside). The floors are
//! the ones `ARCHITECTURE.md` draws; a new module must be given one here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const FLOORS: &[&[&str]] = &[
    &[
        "activity",
        "api",
        "class",
        "cron",
        "egress",
        "http",
        "id",
        "lease",
        "lifecycle",
        "metrics",
        "runtime",
        "store",
        "timestamp",
        "tls",
    ],
    &["event", "logbook", "proxy", "peers"],
    &["readiness", "context"],
    &["object"],
    &["namespace"],
    &["app", "worker"],
    &[
        "router",
        "server",
        "build",
        "hosts",
        "manifest",
        "cluster_store",
    ],
    &["session", "js", "platform", "control", "serve", "deploy"],
];

/// Top-level module → the top-level modules its code (tests aside) names as `crate::…`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).expect("under src");
            let top = relative
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .map(|c| c.trim_end_matches(".rs").to_string())
                .expect("a module name");
            if top == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read module");
            let code = text.split("\n#[cfg(test)]\nmod tests").next().unwrap_or("");
            let used = graph.entry(top.clone()).or_default();
            let code: String = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for name in named_modules(&code) {
                if name != top {
                    used.insert(name);
                }
            }
        }
    }
    graph
}

/// The top-level modules that `code` names after `crate::`, grouped imports included
/// (`use crate::{a::X, b};`).
fn named_modules(code: &str) -> BTreeSet<String> {
    let ident = |text: &str| -> String {
        text.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + 7..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let mut depth = 0;
                let mut item_start = 0;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            names.insert(ident(&group[item_start..i]));
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            names.insert(ident(&group[item_start..i]));
                            item_start = i + 1;
                        }
                        _ => {}
                    }
                }
            }
            None => {
                names.insert(ident(rest));
            }
        }
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
}

#[test]
fn grouped_imports_are_read_too() {
    let names = named_modules("use crate::{a::X, b, c::{d, e}};\nfn f() { crate::g::h(); }");
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["a", "b", "c", "g"]);
}

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|floor| floor.contains(&module))
}

#[test]
fn imports_point_down_the_floors() {
    let graph = imports();
    assert!(graph.len() >= 20, "found the modules: {graph:?}");
    let mut wrong = Vec::new();
    for (module, used) in &graph {
        let Some(floor) = floor_of(module) else {
            wrong.push(format!(
                "{module} has no floor: add it to FLOORS and ARCHITECTURE.md"
            ));
            continue;
        };
        for other in used {
            match floor_of(other) {
                Some(f) if f <= floor => {}
                Some(f) => wrong.push(format!(
                    "{module} (floor {}) imports {other} (floor {})",
                    floor + 1,
                    f + 1
                )),
                None => wrong.push(format!("{module} imports {other}, which has no floor")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    let graph = imports();
    // Depth-first search for a back edge.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut cycle = path[at..].to_vec();
            cycle.push(module.to_string());
            return Some(cycle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!(
                "modules import each other in a circle: {}",
                cycle.join(" → ")
            );
        }
    }
}
