//! How berth's identity of a container is written into Docker: its name and its labels.
//!
//! Docker takes label values of any length, so the object id goes in whole; the object
//! name, which a client may choose, is escaped and bounded so that `docker ps` stays
//! readable. Names are `berth-<app>-<class>-<id>-<n>`, within Docker's character set.

use std::collections::BTreeMap;

use crate::id::ObjectId;
use crate::runtime::{Identity, Selector};

pub const APP: &str = "berth.app";
pub const CLASS: &str = "berth.class";
pub const OBJECT_ID: &str = "berth.object-id";
pub const OBJECT_NAME: &str = "berth.object-name";
pub const SESSION: &str = "berth.session";
pub const HOST: &str = "berth.host";
pub const VERSION: &str = "berth.version";
pub const STANDBY: &str = "berth.standby";

/// The labels that carry `identity`, added to the class's own `extra` labels (berth's
/// win on a clash, so that a class cannot disguise its containers).
pub(crate) fn render(
    identity: &Identity,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = extra.clone();
    for (key, value) in [
        (APP, identity.app.clone()),
        (CLASS, identity.class.clone()),
        (OBJECT_ID, identity.object_id.to_string()),
        (
            OBJECT_NAME,
            label_value(identity.object_name.as_deref().unwrap_or("")),
        ),
        (SESSION, identity.session.clone()),
        (HOST, identity.host.clone()),
        (VERSION, identity.version.clone()),
    ] {
        labels.insert(key.to_string(), value);
    }
    if identity.standby {
        labels.insert(STANDBY.to_string(), "true".to_string());
    } else {
        labels.remove(STANDBY);
    }
    labels
}

/// The identity that `labels` carry, if they carry a whole one.
pub(crate) fn parse(labels: &BTreeMap<String, String>) -> Option<Identity> {
    let name = labels.get(OBJECT_NAME)?;
    Some(Identity {
        app: labels.get(APP)?.clone(),
        class: labels.get(CLASS)?.clone(),
        object_id: ObjectId::parse_hex(labels.get(OBJECT_ID)?).ok()?,
        object_name: (!name.is_empty()).then(|| name.clone()),
        session: labels.get(SESSION)?.clone(),
        host: labels.get(HOST).cloned().unwrap_or_default(),
        version: labels.get(VERSION).cloned().unwrap_or_default(),
        standby: labels.get(STANDBY).is_some_and(|v| v == "true"),
    })
}

/// Docker's label filters for `selector`.
pub(crate) fn filters(selector: &Selector) -> Vec<String> {
    let mut filters = vec![format!("{APP}={}", selector.app)];
    if let Some(session) = &selector.session {
        filters.push(format!("{SESSION}={session}"));
    }
    if let Some(id) = &selector.object_id {
        filters.push(format!("{OBJECT_ID}={id}"));
    }
    filters
}

/// A container name for `identity`; `serial` tells apart the containers one session
/// makes for one object over time.
pub(super) fn container_name(identity: &Identity, serial: u64) -> String {
    let session: String = identity.session.chars().take(6).collect();
    format!(
        "berth-{}-{}-{}{}-{}{serial}",
        name_part(&identity.app),
        name_part(&identity.class),
        if identity.standby { "standby-" } else { "" },
        identity.object_id.short(),
        name_part(&session),
    )
}

/// Object names may hold any text; labels get a printable, bounded form.
fn label_value(name: &str) -> String {
    let escaped = name.escape_default().to_string();
    if escaped.chars().count() <= 256 {
        return escaped;
    }
    let mut cut: String = escaped.chars().take(256).collect();
    cut.push('…');
    cut
}

/// A piece of a Docker container name: `[a-zA-Z0-9_.-]`, bounded.
fn name_part(text: &str) -> String {
    let part: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    if part.is_empty() {
        "x".to_string()
    } else {
        part.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::IdScheme;

    fn identity(name: Option<&str>) -> Identity {
        Identity {
            app: "hello".into(),
            class: "My App/€".into(),
            object_id: IdScheme::new("hello/My App/€").for_name("alpha"),
            object_name: name.map(str::to_string),
            session: "0123456789abcdef".into(),
            host: "machine".into(),
            version: String::new(),
            standby: false,
        }
    }

    #[test]
    fn names_become_safe_docker_names_and_labels() {
        assert_eq!(name_part("My App/€"), "my-app--");
        assert_eq!(name_part(""), "x");
        assert_eq!(name_part(&"a".repeat(100)).len(), 40);
        assert_eq!(label_value("a\0b\nc"), "a\\u{0}b\\nc");
        assert_eq!(label_value(&"x".repeat(10_000)).chars().count(), 257);
        let name = container_name(&identity(None), 7);
        assert!(name.starts_with("berth-hello-my-app---"), "{name}");
        assert!(name.ends_with("-0123457"), "{name}");
    }

    #[test]
    fn identity_round_trips_through_labels() {
        for name in [Some("alpha"), None] {
            let identity = identity(name);
            let extra = BTreeMap::from([(APP.to_string(), "spoofed".to_string())]);
            let labels = render(&identity, &extra);
            assert_eq!(labels[APP], "hello", "berth's labels win");
            assert_eq!(parse(&labels), Some(identity));
        }
        assert_eq!(parse(&BTreeMap::new()), None);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]

            /// Object names of any text give valid Docker name parts and bounded,
            /// printable labels.
            #[test]
            fn names_of_any_text(name in "\\PC{0,300}|[\\x00-\\x1f/\\\\]{0,40}") {
                let part = name_part(&name);
                prop_assert!(!part.is_empty() && part.len() <= 40);
                prop_assert!(part.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
                let label = label_value(&name);
                prop_assert!(label.chars().count() <= 257);
                prop_assert!(!label.chars().any(char::is_control));
            }
        }
    }
}
