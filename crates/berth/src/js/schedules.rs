//! `native.schedule(target, dueMs, payload)`, `native.schedules(target)` and
//! `native.unschedule(target, id)`: a container class's `this.schedule` and its kin
//! (builtins/hooks.js) kept as the object's alarms ([`crate::object::Alarm`]), in the
//! app's store. So a schedule outlives the runtime that made it (a new version of the
//! app, a restart of berth), one that came due while berth was down runs at the next
//! start, and each is delivered through the class's `onAlarm` hook, in whichever runtime
//! runs the object's hooks then (see [`super::class_hooks`]).

use rquickjs::prelude::Async;
use rquickjs::{Ctx, Function, Object};
use tokio::runtime::Handle;

use super::bindings::on_object;
use crate::cron::{from_ms, to_ms};
use crate::object::Alarm;
use crate::worker::Env;

/// An alarm as JSON for builtins/hooks.js: `{ id, dueMs, payload, attempts }`, where
/// `payload` is the JSON text the schedule was made with.
pub(super) fn alarm_json(alarm: &Alarm) -> serde_json::Value {
    serde_json::json!({
        "id": alarm.id,
        "dueMs": to_ms(alarm.at),
        "payload": alarm.payload,
        "attempts": alarm.attempts,
    })
}

/// Sets the three functions on `native`; each gives a promise of JSON text.
pub(super) fn install<'js>(
    ctx: &Ctx<'js>,
    native: &Object<'js>,
    env: &Env,
    main: &Handle,
) -> rquickjs::Result<()> {
    let (e, m) = (env.clone(), main.clone());
    let schedule = move |ctx: Ctx<'js>, target: Object<'js>, due_ms: f64, payload: String| {
        // One before 1970 (or not a time at all) is due at once.
        let at = from_ms(due_ms.max(0.0) as i64);
        on_object(&ctx, &e, &m, &target, move |object| async move {
            let alarm = object.schedule(at, payload).await;
            let alarm = alarm.map_err(|e| format!("schedule: {e}"))?;
            Ok(alarm_json(&alarm).to_string())
        })
    };
    native.set("schedule", Function::new(ctx.clone(), Async(schedule))?)?;
    let (e, m) = (env.clone(), main.clone());
    let schedules = move |ctx: Ctx<'js>, target: Object<'js>| {
        on_object(&ctx, &e, &m, &target, |object| async move {
            let alarms = object.list_schedules().await;
            let alarms = alarms.map_err(|e| format!("getSchedules: {e}"))?;
            let json: Vec<_> = alarms.iter().map(alarm_json).collect();
            Ok(serde_json::Value::from(json).to_string())
        })
    };
    native.set("schedules", Function::new(ctx.clone(), Async(schedules))?)?;
    let (e, m) = (env.clone(), main.clone());
    let unschedule = move |ctx: Ctx<'js>, target: Object<'js>, id: String| {
        on_object(&ctx, &e, &m, &target, move |object| async move {
            let deleted = object.delete_schedule(&id).await;
            deleted.map_err(|e| format!("deleteSchedule({id:?}): {e}"))
        })
    };
    native.set("unschedule", Function::new(ctx.clone(), Async(unschedule))?)
}
