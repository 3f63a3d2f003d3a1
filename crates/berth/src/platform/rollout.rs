//! Rolling a changed class out over its running instances, step by step.
//!
//! New starts use the new version as soon as the release is applied. The instances that
//! run the old version are replaced in the shares the class's `rollout.steps` give: each
//! may finish its requests for `rollout.grace`, then gets SIGTERM (and SIGKILL after
//! `stop_grace`). The namespace keeps one live object per name, so an old and a new
//! container never serve one name at once. The first step's instances are started again
//! at once, on the new version, and must become ready: if one exits or never gets ready,
//! the rollout halts with its error, before the other steps touch anything. A last pass
//! replaces what started on the old version while the steps ran.

use crate::object::{Object, StartOptions};

use super::hosted::Changed;

/// Replaces the outdated instances of each changed class; `progress` hears of each step.
/// The error says which class failed, and why.
pub(crate) async fn roll_out<F, Fut>(changed: &[Changed], progress: F) -> Result<(), String>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for class in changed {
        let name = class.namespace.class_name().to_string();
        let outdated: Vec<Object> = class
            .namespace
            .objects()
            .into_iter()
            .filter(Object::runs_outdated)
            .collect();
        let total = outdated.len();
        let mut done = 0;
        let replaced = |done: usize| {
            if total == 0 {
                1.0
            } else {
                done as f64 / total as f64
            }
        };
        class.namespace.report_rollout(replaced(0));
        for (step, share) in class.rollout.steps.iter().enumerate() {
            let upto = (total * usize::from(*share)).div_ceil(100).min(total);
            let batch = &outdated[done.min(upto)..upto];
            let results = futures_util::future::join_all(
                batch.iter().map(|o| o.replace(class.rollout.grace)),
            )
            .await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                return Err(format!("{name}: an old instance could not be stopped: {e}"));
            }
            if step == 0 {
                for object in batch {
                    if let Err(e) = object
                        .start_and_wait_for_ports(&[], StartOptions::default())
                        .await
                    {
                        return Err(format!(
                            "{name}: the new version failed on {}: {e}",
                            object.describe()
                        ));
                    }
                }
            }
            done = upto;
            class.namespace.report_rollout(replaced(done));
            progress(format!(
                "{name}: {done} of {total} running instances replaced"
            ))
            .await;
        }
        // A container that was starting when the rollout looked, on the old version, is
        // replaced too: `replace` waits for a start under way before it judges.
        class.namespace.replace_all(class.rollout.grace).await;
    }
    Ok(())
}
