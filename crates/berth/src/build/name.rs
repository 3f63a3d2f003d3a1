//! The names of dev images: `berth-dev/<app>-<image name>`.
//!
//! The app's name comes first so that two apps that both have a container called `web`
//! do not build into, and prune, the same repository.

use super::{BuildError, DEV_PREFIX};

/// The repository, without a tag, that `app`'s image `name` is built into.
pub(super) fn repository(app: &str, name: &str) -> Result<String, BuildError> {
    let component = format!("{app}-{name}");
    // The manifest accepts a few names (`a.`, `a__.b`) that the Docker Engine refuses, and
    // whose refusal would otherwise arrive as a bare "invalid reference format".
    if !valid_component(&component) || component.len() > 200 {
        return Err(BuildError::Name {
            image: format!("{DEV_PREFIX}/{component}"),
        });
    }
    Ok(format!("{DEV_PREFIX}/{component}"))
}

/// A path component of a Docker repository name: lowercase letters and digits, separated
/// by one `.`, one or two `_`, or any number of `-`.
fn valid_component(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    name.starts_with(alnum)
        && name.ends_with(alnum)
        && name
            .chars()
            .all(|c| alnum(c) || matches!(c, '.' | '_' | '-'))
        && name
            .split(alnum)
            .filter(|run| !run.is_empty())
            .all(|run| matches!(run, "." | "_" | "__") || run.chars().all(|c| c == '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_named_after_app_and_container() {
        assert_eq!(
            repository("shop", "web").ok().as_deref(),
            Some("berth-dev/shop-web")
        );
        assert_eq!(
            repository("blog", "web").ok().as_deref(),
            Some("berth-dev/blog-web")
        );
        assert_eq!(
            repository("my_app.v2", "api--x").ok().as_deref(),
            Some("berth-dev/my_app.v2-api--x")
        );
        for (app, name) in [
            ("app_", "web"),
            ("app", "web."),
            ("a..b", "web"),
            ("a", "b_.c"),
        ] {
            let e = repository(app, name).err().map(|e| e.to_string());
            assert_eq!(
                e,
                Some(format!("berth-dev/{app}-{name} is not an image name the Docker Engine accepts; rename the app or the container's image (name = …) to lowercase letters and digits separated by one '.', one or two '_', or '-'")),
            );
        }
    }
}
