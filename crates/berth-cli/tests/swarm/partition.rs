//! A worker node cut off from the other two (its packets to and from them dropped, while
//! the host still reaches it): what each router serves during the partition, and how
//! long the two copies of one object overlap.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::{self, Cluster};
use crate::failover;
use crate::routers::{self, Routers};

/// How long a client waits for a router on the cut-off node before it counts the request
/// as unanswered.
const CLIENT_WAIT: Duration = Duration::from_secs(3);

/// Cuts node `cut` off from the other nodes, or heals it: every packet between them is
/// dropped in the node, its own (the node's engine, the overlay's VXLAN) and its
/// containers' (the router's) alike. The host, at the gateway, still reaches it.
async fn partition(cluster: &Cluster, cut: usize, on: bool) {
    let node = &cluster.nodes[cut];
    for (i, other) in cluster.nodes.iter().enumerate() {
        if i == cut {
            continue;
        }
        let ip = other.ip.to_string();
        for (chain, side) in [
            ("INPUT", "-s"),
            ("OUTPUT", "-d"),
            ("FORWARD", "-s"),
            ("FORWARD", "-d"),
        ] {
            let action = if on { "-I" } else { "-D" };
            cluster::run(tokio::process::Command::new("docker").args([
                "exec", &node.name, "iptables", action, chain, side, &ip, "-j", "DROP",
            ]))
            .await;
        }
    }
}

/// Whether a container whose hostname is `hostname` runs on node `node`.
async fn runs_on(cluster: &Cluster, node: usize, hostname: &str) -> bool {
    let ids = cluster::run(cluster.nodes[node].docker().args(["ps", "-q"])).await;
    ids.lines().any(|id| hostname.starts_with(id))
}

/// What a request for `name` through the router at `addr` got: which container answered,
/// or what else happened, in words.
async fn outcome(addr: &str, name: &str, old: &str) -> (String, String) {
    let headers = [("Host", routers::HOST), ("x-name", name)];
    let get = routers::request(addr, "GET", "/env", &headers, "");
    match tokio::time::timeout(CLIENT_WAIT, get).await {
        Err(_) => (String::new(), format!("no answer in {CLIENT_WAIT:?}")),
        Ok(Err(e)) => (String::new(), format!("failed: {e}")),
        Ok(Ok((200, env))) => {
            let env: serde_json::Value = serde_json::from_str(&env).unwrap_or_default();
            let host = env["HOSTNAME"].as_str().unwrap_or_default().to_string();
            let which = if host == old {
                "the old copy"
            } else {
                "a new copy"
            };
            (host, format!("200 from {which}"))
        }
        Ok(Ok((status, _))) => (String::new(), format!("status {status}")),
    }
}

/// Cuts off the worker that runs an object homed on another node, for 30 s. The routers
/// on the other nodes serve the object from a new copy once the managers mark the node
/// down; the old copy keeps running on the cut-off node until the partition heals, and
/// then stops. Afterwards every live router serves one copy. Prints what the cut-off
/// node's router answered, and how long the two copies overlapped.
pub async fn a_cut_off_node_runs_its_copy_until_it_heals(cluster: &Cluster, routers: &Routers) {
    // A worker whose router still answers, if one does (an earlier scenario kills a
    // router), and a router on another node that answers.
    let answering = routers::answering(routers).await;
    let cut = [2, 1]
        .into_iter()
        .find(|w| answering.contains(w))
        .unwrap_or(2);
    let via = *answering
        .iter()
        .find(|r| **r != cut)
        .expect("a router answers on another node");
    let cut_router_lives = answering.contains(&cut);
    let name = failover::an_object_on(cluster, routers, via, cut, "cut").await;
    let old = routers::hostname(routers, via, &name).await;
    assert!(runs_on(cluster, cut, &old).await, "{name} runs on the node");

    partition(cluster, cut, true).await;
    let began = Instant::now();
    // The cut-off node's router, asked all along, apart: it may keep a client waiting.
    let healing = Arc::new(AtomicBool::new(false));
    let asking = {
        let (addr, name, old, healing) = (
            routers.public[cut].clone(),
            name.clone(),
            old.clone(),
            healing.clone(),
        );
        tokio::spawn(async move {
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            while !healing.load(Ordering::Relaxed) {
                let (_, said) = outcome(&addr, &name, &old).await;
                *seen.entry(said).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            seen
        })
    };
    let majority = &routers.public[via];
    let mut new_copy: Option<(Duration, String)> = None;
    let mut old_ran_with_new = false;
    let mut seen_by_majority: BTreeMap<String, usize> = BTreeMap::new();
    while began.elapsed() < Duration::from_secs(30) || new_copy.is_none() {
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "{name} was not served from a new copy within 120 s of the cut; router {via} \
             answered {seen_by_majority:?}"
        );
        if new_copy.is_none() {
            let (host, said) = outcome(majority, &name, &old).await;
            *seen_by_majority.entry(said).or_default() += 1;
            if !host.is_empty() && host != old {
                new_copy = Some((began.elapsed(), host));
            }
        } else {
            // The majority side keeps it awake, and serves it from the new copy only.
            let (_, said) = outcome(majority, &name, &old).await;
            assert_eq!(said, "200 from a new copy", "through router {via}");
        }
        if new_copy.is_some() && !old_ran_with_new {
            old_ran_with_new = runs_on(cluster, cut, &old).await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (new_at, new) = new_copy.expect("a new copy");
    assert!(
        old_ran_with_new,
        "the old copy of {name} still runs on the cut-off node when the new one answers"
    );

    healing.store(true, Ordering::Relaxed);
    let seen_by_cut = asking.await.expect("the cut-off router's asker");
    // It reaches neither the object's home nor a manager: it serves no copy.
    assert!(
        !seen_by_cut.keys().any(|said| said.starts_with("200")),
        "the cut-off node's router served {name}: {seen_by_cut:?}"
    );
    partition(cluster, cut, false).await;
    let healed = Instant::now();
    let mut old_stopped = None;
    while healed.elapsed() < Duration::from_secs(120) {
        if !runs_on(cluster, cut, &old).await {
            old_stopped = Some(healed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old_stopped =
        old_stopped.unwrap_or_else(|| panic!("the old copy of {name} still runs 120 s after"));
    // Once healed, one container answers for the name through every live router (the new
    // copy, or another if it slept meanwhile: it sleeps after 8 s without requests).
    let serving = cluster::eventually(|| async {
        match outcome(&routers.public[via], &name, &old).await {
            (host, _) if !host.is_empty() && host != old => Ok(host),
            (_, said) => Err(said),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("router {via} serves {name} once healed: {e}"));
    // The cut-off node's router is a task too: Swarm shut it down with the node, and the
    // test's routers are never restarted (a router's service restarts by default).
    for router in answering.iter().copied().filter(|r| *r != cut) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let said = match outcome(&routers.public[router], &name, &old).await {
                (host, _) if host == serving => break,
                (_, said) => said,
            };
            assert!(
                Instant::now() < deadline,
                "router {router} serves {name} from the one copy once healed: {said}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let (_, cut_after) = outcome(&routers.public[cut], &name, &old).await;
    let overlap = healed.duration_since(began) + old_stopped - new_at;
    eprintln!(
        "partition of n{}: {name} served from a new copy {new_at:?} after the cut; the old \
         copy {} when the new one answered, and stopped {old_stopped:?} after the heal: two copies for \
         {overlap:?}; the cut-off node's router (alive before the cut: {cut_router_lives}) answered {seen_by_cut:?}; once healed, \
         every router served {}; the cut-off node's router: {cut_after}",
        cut + 1,
        if old_ran_with_new {
            "still ran"
        } else {
            "had stopped"
        },
        if serving == new {
            "the new copy"
        } else {
            "a later copy (the new one had slept)"
        },
    );
}
